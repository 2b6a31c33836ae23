//! Starts the chapter 6 solutions binary with the step's fixture app and checks exercise 2.

mod common;

use common::{get, wait_for, Server};
use std::io::Write;
use std::time::Duration;

#[test]
fn exercise_2_a_client_beyond_max_children_gets_503_until_a_child_is_reaped() {
    let server = Server::fixture("max-children", &["--max-children", "1"]);
    // The only child sleeps in /slow for a second.
    let mut slow = server.connect();
    let request = "GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    slow.write_all(request.as_bytes()).unwrap();
    let started = server.dir.join("slow-started");
    wait_for("the slow request to start", Duration::from_secs(5), || {
        started.exists().then_some(())
    });
    let (head, body) = get(&server, "/");
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    assert_eq!(body, "all connections are busy, try again\n");
    // Once the slow child has exited and been reaped, there is room again.
    wait_for(
        "a 200 after the slow child is reaped",
        Duration::from_secs(5),
        || {
            let (head, body) = get(&server, "/");
            head.starts_with("HTTP/1.1 200 ").then_some(body)
        },
    );
}
