//! HTTP/1.1 as RFC 9110 and RFC 9112 define it, the parts a WSGI server needs: parsing request
//! heads, decoding request bodies, and writing response framing; and the PROXY protocol header
//! a TCP balancer may put before them. Nothing here knows about Python or sockets, so it is
//! tested on byte strings alone.

pub mod body;
pub mod error;
pub mod parse;
pub mod proxy;
pub mod response;

pub use error::Error;
pub use parse::{Framing, Head, HeadScanner, Limits, Span, Status};
