#!/usr/bin/env python3
"""Writes the raw-request corpus that tests/corpus.rs runs against the real server.

    valid/NNN.http     the bytes a client sends (one request)
    valid/NNN.json     what the app (tests/apps/corpus.py) must see: the environ subset and the
                       body, plus "_connection" (whether the server keeps the connection open
                       after answering) and "_about"; "$PORT" stands for the listening port
    invalid/NNN.http   the bytes a client sends (sometimes a pipeline)
    invalid/NNN.expect "STATUS[,STATUS...] RFC section: why", the statuses in the order the
                       server must answer before it closes the connection; only the 2xx ones
                       may reach the app

Every expectation below is written by hand from RFC 9110/9112 (and PEP 3333 for the environ),
never copied from the server's output. Run `python3 tests/requests/make_cases.py` after
editing; it rewrites both folders.
"""

import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
VALID = []
INVALID = []

H = b"Host: example.com\r\n"


def valid(about, raw, **env):
    """A request the server must pass to the app, with the environ it must build.

    Defaults describe `GET / HTTP/1.1` with `Host: example.com`; each case overrides what it
    changes. Keyword names are environ keys; `body` is the body the app reads; `connection`
    is "keep-alive" or "close".
    """
    want = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "RAW_URI": None,
        "CONTENT_LENGTH": None,
        "CONTENT_TYPE": None,
        "SERVER_NAME": "example.com",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "example.com",
        "body": "",
        "_connection": "keep-alive",
    }
    if "connection" in env:
        want["_connection"] = env.pop("connection")
    for key, value in env.items():
        want[key] = value
    if want["RAW_URI"] is None:
        q = want["QUERY_STRING"]
        want["RAW_URI"] = want["PATH_INFO"] + ("?" + q if q else "")
    # A key set to ... is one the app must not see at all.
    want = {k: v for k, v in want.items() if v is not ...}
    want["_about"] = about
    VALID.append((raw, want))


def invalid(statuses, cite, about, raw):
    """A request (or pipeline) the server must refuse with `statuses`, then close."""
    INVALID.append((raw, f"{statuses} {cite}: {about}\n"))


def chunked_post(body_framing, extra=b""):
    return (
        b"POST /upload HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n" + extra + b"\r\n"
        + body_framing
    )


def cl_post(headers, body):
    return b"POST /upload HTTP/1.1\r\n" + H + headers + b"\r\n" + body


# ------------------------------------------------------------------------------------------
# Valid requests
# ------------------------------------------------------------------------------------------

# Request line and methods (RFC 9112 §3).
valid("simple GET", b"GET / HTTP/1.1\r\n" + H + b"\r\n")
valid("path and query", b"GET /a/b?x=1&y=2 HTTP/1.1\r\n" + H + b"\r\n",
      PATH_INFO="/a/b", QUERY_STRING="x=1&y=2")
for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "M-SEARCH", "get", "X!#$%&'*+.^_`|~Y"]:
    valid(f"method {m} is a token (RFC 9110 §9.1)",
          m.encode() + b" /m HTTP/1.1\r\n" + H + b"\r\n", REQUEST_METHOD=m, PATH_INFO="/m")
valid("OPTIONS * (asterisk-form, RFC 9112 §3.2.4)", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
      REQUEST_METHOD="OPTIONS", PATH_INFO="*")
valid("a higher minor version is served as HTTP/1.1 (RFC 9110 §6.2)",
      b"GET / HTTP/1.2\r\n" + H + b"\r\n")
valid("two empty lines before the request line are ignored (RFC 9112 §2.2)",
      b"\r\n\r\nGET / HTTP/1.1\r\n" + H + b"\r\n")

# Targets and percent escapes (PEP 3333: PATH_INFO decoded, RAW_URI and QUERY_STRING not).
valid("escaped space", b"GET /a%20b HTTP/1.1\r\n" + H + b"\r\n",
      PATH_INFO="/a b", RAW_URI="/a%20b")
valid("escaped slash is decoded in PATH_INFO", b"GET /a%2Fb%2fc HTTP/1.1\r\n" + H + b"\r\n",
      PATH_INFO="/a/b/c", RAW_URI="/a%2Fb%2fc")
valid("UTF-8 escapes become latin-1 code points", b"GET /caf%C3%A9 HTTP/1.1\r\n" + H + b"\r\n",
      PATH_INFO="/caf\u00c3\u00a9", RAW_URI="/caf%C3%A9")
valid("a bad escape is kept", b"GET /100%zz%4 HTTP/1.1\r\n" + H + b"\r\n",
      PATH_INFO="/100%zz%4")
valid("escaped NUL", b"GET /a%00b HTTP/1.1\r\n" + H + b"\r\n",
      PATH_INFO="/a\u0000b", RAW_URI="/a%00b")
valid("dot segments are not normalised", b"GET /a/../b/./c HTTP/1.1\r\n" + H + b"\r\n",
      PATH_INFO="/a/../b/./c")
valid("escaped dots are decoded, not resolved", b"GET /%2e%2e/x HTTP/1.1\r\n" + H + b"\r\n",
      PATH_INFO="/../x", RAW_URI="/%2e%2e/x")
valid("plus is not a space in a path", b"GET /a+b HTTP/1.1\r\n" + H + b"\r\n", PATH_INFO="/a+b")
valid("query escapes are not decoded", b"GET /?q=%20a+b HTTP/1.1\r\n" + H + b"\r\n",
      QUERY_STRING="q=%20a+b")
valid("question mark inside the query", b"GET /p?a=?&b=/ HTTP/1.1\r\n" + H + b"\r\n",
      PATH_INFO="/p", QUERY_STRING="a=?&b=/")
valid("empty query", b"GET /p? HTTP/1.1\r\n" + H + b"\r\n", PATH_INFO="/p", RAW_URI="/p?")
valid("double slash", b"GET //x HTTP/1.1\r\n" + H + b"\r\n", PATH_INFO="//x")
valid("sub-delims, colon and at in a path", b"GET /a;b=c,d:e@f!$&'()*+ HTTP/1.1\r\n" + H + b"\r\n",
      PATH_INFO="/a;b=c,d:e@f!$&'()*+")

# Absolute-form (RFC 9112 §3.2.2: the target's authority replaces Host).
valid("absolute-form overrides Host", b"GET http://other.test/p?q=1 HTTP/1.1\r\n" + H + b"\r\n",
      PATH_INFO="/p", QUERY_STRING="q=1", RAW_URI="http://other.test/p?q=1",
      SERVER_NAME="other.test")
valid("absolute-form with port", b"GET http://other.test:8080/p HTTP/1.1\r\n" + H + b"\r\n",
      PATH_INFO="/p", RAW_URI="http://other.test:8080/p", SERVER_NAME="other.test",
      SERVER_PORT="8080")
valid("absolute-form with an upper-case scheme", b"GET HTTP://other.test/ HTTP/1.1\r\n" + H + b"\r\n",
      RAW_URI="HTTP://other.test/", SERVER_NAME="other.test")
valid("absolute-form without a path", b"GET http://other.test HTTP/1.1\r\n" + H + b"\r\n",
      PATH_INFO="", RAW_URI="http://other.test", SERVER_NAME="other.test")
valid("absolute-form with a query and no path", b"GET http://other.test?x=1 HTTP/1.1\r\n" + H + b"\r\n",
      PATH_INFO="", QUERY_STRING="x=1", RAW_URI="http://other.test?x=1", SERVER_NAME="other.test")
valid("absolute-form on HTTP/1.0 without Host", b"GET http://other.test/ HTTP/1.0\r\n\r\n",
      RAW_URI="http://other.test/", SERVER_NAME="other.test", SERVER_PROTOCOL="HTTP/1.0",
      HTTP_HOST=..., connection="close")

# Host (RFC 9112 §3.2).
valid("Host with a port", b"GET / HTTP/1.1\r\nHost: example.com:8000\r\n\r\n",
      SERVER_PORT="8000", HTTP_HOST="example.com:8000")
valid("Host as an IPv6 literal", b"GET / HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n",
      SERVER_NAME="[::1]", SERVER_PORT="8000", HTTP_HOST="[::1]:8000")
valid("Host as an IPv4 address", b"GET / HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n",
      SERVER_NAME="10.0.0.1", HTTP_HOST="10.0.0.1")
valid("Host is case-insensitive by name", b"GET / HTTP/1.1\r\nhOsT: example.com\r\n\r\n")
valid("Host with an underscore (reg-name allows it)", b"GET / HTTP/1.1\r\nHost: my_host\r\n\r\n",
      SERVER_NAME="my_host", HTTP_HOST="my_host")
valid("empty Host on HTTP/1.1 (allowed when the target has no authority)",
      b"GET / HTTP/1.1\r\nHost:\r\n\r\n", SERVER_NAME="127.0.0.1", SERVER_PORT="$PORT", HTTP_HOST="")
valid("no Host on HTTP/1.0", b"GET / HTTP/1.0\r\n\r\n", SERVER_NAME="127.0.0.1",
      SERVER_PORT="$PORT", SERVER_PROTOCOL="HTTP/1.0", HTTP_HOST=..., connection="close")

# Header fields (RFC 9110 §5, RFC 9112 §5; PEP 3333 HTTP_ variables).
valid("whitespace around a value is trimmed",
      b"GET / HTTP/1.1\r\n" + H + b"X-Pad: \t value with  inner  space \t\r\n\r\n",
      HTTP_X_PAD="value with  inner  space")
valid("no space after the colon", b"GET / HTTP/1.1\r\n" + H + b"X-Tight:v\r\n\r\n", HTTP_X_TIGHT="v")
valid("tab after the colon", b"GET / HTTP/1.1\r\n" + H + b"X-Tab:\tv\r\n\r\n", HTTP_X_TAB="v")
valid("empty value", b"GET / HTTP/1.1\r\n" + H + b"X-Empty:\r\n\r\n", HTTP_X_EMPTY="")
valid("obs-text in a value is kept as latin-1", b"GET / HTTP/1.1\r\n" + H + b"X-Text: caf\xe9 \x85\xa0!\r\n\r\n",
      HTTP_X_TEXT="caf\u00e9 \u0085\u00a0!")
valid("colon inside a value", b"GET / HTTP/1.1\r\n" + H + b"X-Colon: a: b:c\r\n\r\n",
      HTTP_X_COLON="a: b:c")
valid("every tchar in a name", b"GET / HTTP/1.1\r\n" + H + b"X-!#$%&'*+.^`|~9: v\r\n\r\n",
      **{"HTTP_X_!#$%&'*+.^`|~9": "v"})
valid("repeated fields are joined with a comma",
      b"GET / HTTP/1.1\r\n" + H + b"X-Dup: a\r\nx-dup: b\r\nX-DUP: c\r\n\r\n", HTTP_X_DUP="a, b, c")
valid("repeated Cookie fields are joined with a semicolon",
      b"GET / HTTP/1.1\r\n" + H + b"Cookie: a=1\r\nCookie: b=2\r\n\r\n", HTTP_COOKIE="a=1; b=2")
valid("names with an underscore are dropped",
      b"GET / HTTP/1.1\r\n" + H + b"X_Forwarded_For: 1.2.3.4\r\nX-Real: 1\r\n\r\n", HTTP_X_REAL="1")
valid("Content-Type is CONTENT_TYPE, not HTTP_CONTENT_TYPE",
      b"GET / HTTP/1.1\r\n" + H + b"Content-Type: text/plain; charset=utf-8\r\n\r\n",
      CONTENT_TYPE="text/plain; charset=utf-8")
valid("common request headers", b"GET / HTTP/1.1\r\n" + H +
      b"User-Agent: corpus/1.0\r\nAccept: */*\r\nAccept-Encoding: gzip\r\nAccept-Language: en\r\n"
      b"Referer: http://r.test/\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
      HTTP_USER_AGENT="corpus/1.0", HTTP_ACCEPT="*/*", HTTP_ACCEPT_ENCODING="gzip",
      HTTP_ACCEPT_LANGUAGE="en", HTTP_REFERER="http://r.test/", HTTP_X_FORWARDED_FOR="1.2.3.4")
valid("a header line just under the default field size", b"GET / HTTP/1.1\r\n" + H +
      b"X-Long: " + b"v" * 4000 + b"\r\n\r\n", HTTP_X_LONG="v" * 4000)

# Limits exactly at the defaults (the edge is inclusive).
valid("request line of exactly 4094 bytes (--limit-request-line)",
      b"GET /" + b"a" * 4080 + b" HTTP/1.1\r\n" + H + b"\r\n", PATH_INFO="/" + "a" * 4080)
valid("header line of exactly 8190 bytes (--limit-request-field_size)",
      b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 8183 + b"\r\n\r\n", HTTP_X_BIG="v" * 8183)
valid("exactly 100 header fields (--limit-request-fields)",
      b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-F%02d: %d\r\n" % (i, i) for i in range(99)) + b"\r\n",
      **{"HTTP_X_F%02d" % i: str(i) for i in range(99)})

# Content-Length bodies (RFC 9112 §6.2, RFC 9110 §8.6).
valid("Content-Length body", cl_post(b"Content-Length: 5\r\n", b"hello"),
      REQUEST_METHOD="POST", PATH_INFO="/upload", CONTENT_LENGTH="5", body="hello")
valid("Content-Length 0", cl_post(b"Content-Length: 0\r\n", b""),
      REQUEST_METHOD="POST", PATH_INFO="/upload", CONTENT_LENGTH="0")
valid("identical Content-Length fields may be taken as one (RFC 9110 §8.6)",
      cl_post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
      REQUEST_METHOD="POST", PATH_INFO="/upload", CONTENT_LENGTH="5", body="hello")
valid("a list of identical Content-Length values (RFC 9112 §6.3 item 5)",
      cl_post(b"Content-Length: 5, 5\r\n", b"hello"),
      REQUEST_METHOD="POST", PATH_INFO="/upload", CONTENT_LENGTH="5", body="hello")
valid("Content-Length with leading zeros", cl_post(b"Content-Length: 005\r\n", b"hello"),
      REQUEST_METHOD="POST", PATH_INFO="/upload", CONTENT_LENGTH="5", body="hello")
valid("binary body with NUL and CRLF", cl_post(b"Content-Length: 6\r\n", b"\x00\r\n\xff\n\r"),
      REQUEST_METHOD="POST", PATH_INFO="/upload", CONTENT_LENGTH="6", body="\u0000\r\n\u00ff\n\r")
valid("a body on GET", b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc",
      CONTENT_LENGTH="3", body="abc")
valid("Content-Type with a body", cl_post(b"Content-Type: application/x-www-form-urlencoded\r\n"
                                          b"Content-Length: 7\r\n", b"a=1&b=2"),
      REQUEST_METHOD="POST", PATH_INFO="/upload", CONTENT_LENGTH="7",
      CONTENT_TYPE="application/x-www-form-urlencoded", body="a=1&b=2")
valid("Transfer_Encoding (underscore) is not Transfer-Encoding; the body is framed by Content-Length",
      cl_post(b"Transfer_Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
      REQUEST_METHOD="POST", PATH_INFO="/upload", CONTENT_LENGTH="5", body="0\r\n\r\n")

# Chunked bodies (RFC 9112 §7.1).
POST_CHUNKED = dict(REQUEST_METHOD="POST", PATH_INFO="/upload", HTTP_TRANSFER_ENCODING="chunked")
valid("one chunk", chunked_post(b"5\r\nhello\r\n0\r\n\r\n"), body="hello", **POST_CHUNKED)
valid("several chunks", chunked_post(b"3\r\nabc\r\n1\r\nd\r\n2\r\nef\r\n0\r\n\r\n"),
      body="abcdef", **POST_CHUNKED)
valid("empty chunked body", chunked_post(b"0\r\n\r\n"), **POST_CHUNKED)
valid("upper- and lower-case hex sizes", chunked_post(b"A\r\n0123456789\r\nb\r\nabcdefghijk\r\n0\r\n\r\n"),
      body="0123456789abcdefghijk", **POST_CHUNKED)
valid("leading zeros in chunk sizes", chunked_post(b"0005\r\nhello\r\n000\r\n\r\n"),
      body="hello", **POST_CHUNKED)
valid("chunk extensions are ignored (RFC 9112 §7.1.1)",
      chunked_post(b"5;name=value;flag\r\nhello\r\n0;last\r\n\r\n"), body="hello", **POST_CHUNKED)
valid("chunk extension with BWS around the semicolon",
      chunked_post(b"5 ; a=b\r\nhello\r\n0\r\n\r\n"), body="hello", **POST_CHUNKED)
valid("quoted chunk extension value with ; and an escaped quote",
      chunked_post(b'5;name="va;l\\"ue"\r\nhello\r\n0\r\n\r\n'), body="hello", **POST_CHUNKED)
valid("trailer fields are read and not shown to the app (RFC 9112 §7.1.2)",
      chunked_post(b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nContent-Length: 99\r\n\r\n"),
      body="hello", **POST_CHUNKED)
valid("chunk data holding CRLF and a fake last chunk",
      chunked_post(b"7\r\n\r\n0\r\n\r\n\r\n0\r\n\r\n"), body="\r\n0\r\n\r\n", **POST_CHUNKED)
valid("Transfer-Encoding with a tab after the colon is still chunked (OWS, RFC 9110 §5.6.3)",
      b"POST /upload HTTP/1.1\r\n" + H + b"Transfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
      body="hello", **POST_CHUNKED)
valid("Transfer-Encoding is case-insensitive",
      b"POST /upload HTTP/1.1\r\n" + H + b"transfer-encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
      body="hello", **dict(POST_CHUNKED, HTTP_TRANSFER_ENCODING="CHUNKED"))
valid("empty list elements in Transfer-Encoding are ignored (RFC 9110 §5.6.1.2)",
      b"POST /upload HTTP/1.1\r\n" + H + b"Transfer-Encoding: , chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
      body="hello", **dict(POST_CHUNKED, HTTP_TRANSFER_ENCODING=", chunked"))

# Expect (RFC 9110 §10.1.1).
valid("Expect: 100-continue", cl_post(b"Expect: 100-continue\r\nContent-Length: 5\r\n", b"hello"),
      REQUEST_METHOD="POST", PATH_INFO="/upload", CONTENT_LENGTH="5", body="hello",
      HTTP_EXPECT="100-continue")
valid("Expect is ignored on HTTP/1.0",
      b"POST /upload HTTP/1.0\r\nExpect: magic\r\nContent-Length: 2\r\n\r\nhi",
      REQUEST_METHOD="POST", PATH_INFO="/upload", CONTENT_LENGTH="2", body="hi",
      HTTP_EXPECT="magic", SERVER_NAME="127.0.0.1", SERVER_PORT="$PORT",
      SERVER_PROTOCOL="HTTP/1.0", HTTP_HOST=..., connection="close")

# Persistence (RFC 9112 §9.3).
valid("HTTP/1.1 stays open by default", b"GET / HTTP/1.1\r\n" + H + b"\r\n")
valid("HTTP/1.1 with Connection: close", b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n",
      HTTP_CONNECTION="close", connection="close")
valid("Connection tokens are case-insensitive and listed",
      b"GET / HTTP/1.1\r\n" + H + b"Connection: Upgrade, CLOSE\r\n\r\n",
      HTTP_CONNECTION="Upgrade, CLOSE", connection="close")
valid("HTTP/1.0 closes by default", b"GET / HTTP/1.0\r\n" + H + b"\r\n",
      SERVER_PROTOCOL="HTTP/1.0", connection="close")
valid("HTTP/1.0 keep-alive", b"GET / HTTP/1.0\r\n" + H + b"Connection: keep-alive\r\n\r\n",
      SERVER_PROTOCOL="HTTP/1.0", HTTP_CONNECTION="keep-alive")
valid("HTTP/1.0 Keep-Alive in another case, with a body",
      b"POST /upload HTTP/1.0\r\n" + H + b"Connection: Keep-Alive\r\nContent-Length: 2\r\n\r\nhi",
      REQUEST_METHOD="POST", PATH_INFO="/upload", CONTENT_LENGTH="2", body="hi",
      SERVER_PROTOCOL="HTTP/1.0", HTTP_CONNECTION="Keep-Alive")
valid("HTTP/1.0 with keep-alive and close: close wins",
      b"GET / HTTP/1.0\r\n" + H + b"Connection: keep-alive, close\r\n\r\n",
      SERVER_PROTOCOL="HTTP/1.0", HTTP_CONNECTION="keep-alive, close", connection="close")
valid("HTTP/1.1 with Connection: keep-alive", b"GET / HTTP/1.1\r\n" + H + b"Connection: keep-alive\r\n\r\n",
      HTTP_CONNECTION="keep-alive")

# Added after the first run (appended so existing case numbers stay put).
valid("Host with an empty port: SERVER_PORT is never empty (PEP 3333)",
      b"GET / HTTP/1.1\r\nHost: example.com:\r\n\r\n", HTTP_HOST="example.com:")
valid("Host as a bare IPv6 literal", b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n",
      SERVER_NAME="[::1]", HTTP_HOST="[::1]")
valid("absolute-form with an IPv6 literal and a port",
      b"GET http://[::1]:8080/p HTTP/1.1\r\n" + H + b"\r\n",
      PATH_INFO="/p", RAW_URI="http://[::1]:8080/p", SERVER_NAME="[::1]", SERVER_PORT="8080")

# ------------------------------------------------------------------------------------------
# Invalid requests
# ------------------------------------------------------------------------------------------

def get_with(header_bytes, version=b"HTTP/1.1"):
    return b"GET / " + version + b"\r\n" + H + header_bytes + b"\r\n"


# Request smuggling: Content-Length and Transfer-Encoding (RFC 9112 §6.1, §6.3).
invalid(400, "RFC 9112 §6.3", "Content-Length with Transfer-Encoding (CL.TE)",
        cl_post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\nG"))
invalid(400, "RFC 9112 §6.3", "Transfer-Encoding then Content-Length (TE.CL)",
        cl_post(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b"8\r\nSMUGGLED\r\n0\r\n\r\n"))
invalid(400, "RFC 9112 §6.3", "Content-Length: 0 with chunked",
        cl_post(b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"))
invalid(400, "RFC 9112 §6.3", "conflicting Content-Length fields",
        cl_post(b"Content-Length: 3\r\nContent-Length: 4\r\n", b"abcd"))
invalid(400, "RFC 9112 §6.3", "conflicting Content-Length list",
        cl_post(b"Content-Length: 3, 4\r\n", b"abcd"))
invalid(400, "RFC 9112 §6.3", "Content-Length: 0 and a second non-zero Content-Length",
        cl_post(b"Content-Length: 0\r\nContent-Length: 44\r\n", b""))
invalid(400, "RFC 9112 §6.3", "empty Content-Length", cl_post(b"Content-Length:\r\n", b""))
invalid(400, "RFC 9112 §6.3", "Content-Length with a sign", cl_post(b"Content-Length: +5\r\n", b"hello"))
invalid(400, "RFC 9112 §6.3", "negative Content-Length", cl_post(b"Content-Length: -1\r\n", b""))
invalid(400, "RFC 9112 §6.3", "hex Content-Length", cl_post(b"Content-Length: 0x5\r\n", b"hello"))
invalid(400, "RFC 9112 §6.3", "Content-Length with a space inside", cl_post(b"Content-Length: 1 2\r\n", b"x" * 12))
invalid(400, "RFC 9112 §6.3", "Content-Length with a trailing comma", cl_post(b"Content-Length: 5,\r\n", b"hello"))
invalid(400, "RFC 9112 §6.3", "Content-Length in exponent form", cl_post(b"Content-Length: 1e1\r\n", b"x" * 10))
invalid(400, "RFC 9110 §8.6", "Content-Length that overflows 64 bits",
        cl_post(b"Content-Length: 99999999999999999999999\r\n", b""))
invalid(400, "RFC 9112 §6.3", "Content-Length wrapping to a small value at 2^64",
        cl_post(b"Content-Length: 18446744073709551621\r\n", b"hello"))
invalid(400, "RFC 9112 §6.3", "Transfer-Encoding: chunked, identity (chunked not last)",
        chunked_post(b"0\r\n\r\n").replace(b"chunked\r\n", b"chunked, identity\r\n", 1))
invalid(400, "RFC 9112 §6.3", "chunked in the first of two Transfer-Encoding fields",
        chunked_post(b"0\r\n\r\n", b"Transfer-Encoding: gzip\r\n"))
invalid(400, "RFC 9112 §6.3", "Transfer-Encoding: identity alone",
        cl_post(b"Transfer-Encoding: identity\r\n", b"0\r\n\r\n"))
invalid(400, "RFC 9112 §6.3", "Transfer-Encoding: xchunked",
        cl_post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"))
invalid(400, "RFC 9112 §6.3", "Transfer-Encoding: chunkedx",
        cl_post(b"Transfer-Encoding: chunkedx\r\n", b"0\r\n\r\n"))
invalid(400, "RFC 9112 §6.3", "Transfer-Encoding: \"chunked\" (quoted)",
        cl_post(b'Transfer-Encoding: "chunked"\r\n', b"0\r\n\r\n"))
invalid(400, "RFC 9112 §6.1", "chunked applied twice in one field",
        cl_post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"))
invalid(400, "RFC 9112 §6.1", "chunked applied twice in two fields",
        chunked_post(b"0\r\n\r\n", b"Transfer-Encoding: chunked\r\n"))
invalid(501, "RFC 9112 §6.1", "unknown coding before chunked",
        cl_post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"))
invalid(501, "RFC 9112 §6.1", "unknown coding in a separate field before chunked",
        cl_post(b"Transfer-Encoding: x-custom\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"))
invalid(400, "RFC 9112 §6.1", "Transfer-Encoding on HTTP/1.0",
        b"POST /upload HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
invalid(400, "RFC 9112 §5.1", "Transfer-Encoding : chunked (space before the colon)",
        cl_post(b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"))
invalid(400, "RFC 9112 §5.1", "Transfer-Encoding<TAB>: chunked",
        cl_post(b"Transfer-Encoding\t: chunked\r\n", b"0\r\n\r\n"))
invalid(400, "RFC 9110 §5.5", "Transfer-Encoding:<VT>chunked",
        cl_post(b"Transfer-Encoding:\x0bchunked\r\n", b"0\r\n\r\n"))
invalid(400, "RFC 9110 §5.5", "Transfer-Encoding: chunked<FF>",
        cl_post(b"Transfer-Encoding: chunked\x0c\r\n", b"0\r\n\r\n"))
invalid(400, "RFC 9112 §5.2", "Transfer-Encoding folded onto the next line",
        cl_post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"))
invalid(400, "RFC 9112 §5.2", "Transfer-Encoding hidden in a folded line",
        cl_post(b"X-Foo: bar\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"))
invalid(400, "RFC 9112 §6.3", "Transfer-Encoding with obs-text before chunked",
        cl_post(b"Transfer-Encoding: \xa0chunked\r\n", b"0\r\n\r\n"))

# Chunk sizes and extensions (RFC 9112 §7.1, §7.1.1).
invalid(400, "RFC 9112 §7.1", "chunk size with a 0x prefix", chunked_post(b"0x5\r\nhello\r\n0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1", "chunk size with a sign", chunked_post(b"+5\r\nhello\r\n0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1", "negative chunk size", chunked_post(b"-1\r\nhello\r\n0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1", "whitespace before the chunk size", chunked_post(b" 5\r\nhello\r\n0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1", "non-hex chunk size", chunked_post(b"g\r\nhello\r\n0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1", "empty chunk size line", chunked_post(b"\r\nhello\r\n0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1", "chunk size that overflows 64 bits",
        chunked_post(b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1", "chunk size wrapping to 5 at 2^64",
        chunked_post(b"10000000000000005\r\nhello\r\n0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1", "chunk longer than its size", chunked_post(b"3\r\nhello\r\n0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1", "chunk shorter than its size", chunked_post(b"7\r\nhello\r\n0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1", "chunk data without its CRLF", chunked_post(b"5\r\nhello0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1", "chunk data followed by a bare LF", chunked_post(b"5\r\nhello\n0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1", "bare LF after the chunk size", chunked_post(b"5\nhello\r\n0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1.1", "bare LF inside a chunk extension",
        chunked_post(b"5;a\nb\r\nhello\r\n0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1.1", "unterminated quoted chunk extension",
        chunked_post(b'5;a="b\r\nhello\r\n0\r\n\r\n'))
invalid(400, "RFC 9112 §7.1.1", "quoted chunk extension holding CRLF",
        chunked_post(b'5;a="x\r\n"\r\nhello\r\n0\r\n\r\n'))
invalid(400, "RFC 9112 §7.1.1", "NUL in a chunk extension", chunked_post(b"5;a=\x00\r\nhello\r\n0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1.1", "DEL in a chunk extension", chunked_post(b"5;a\x7f\r\nhello\r\n0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1", "bare CR ending a chunk size line", chunked_post(b"5\rhello\r\n0\r\n\r\n"))
invalid(400, "RFC 9112 §7.1.2", "folded trailer field", chunked_post(b"0\r\nX: a\r\n b\r\n\r\n"))
invalid(400, "RFC 9112 §7.1.2", "bare LF in the trailer section", chunked_post(b"0\r\nX: a\nY: b\r\n\r\n"))
invalid(400, "RFC 9112 §7.1.2", "NUL in a trailer field", chunked_post(b"0\r\nX: a\x00\r\n\r\n"))
invalid(400, "RFC 9112 §7.1.2", "trailer line without a colon", chunked_post(b"0\r\nnot a field\r\n\r\n"))
invalid(400, "RFC 9112 §7.1.2", "last chunk ended by a bare LF", chunked_post(b"0\r\n\n"))

# Line endings (RFC 9112 §2.2).
invalid(400, "RFC 9112 §2.2", "bare LF line endings throughout", b"GET / HTTP/1.1\nHost: example.com\n\n")
invalid(400, "RFC 9112 §2.2", "bare LF after the request line", b"GET / HTTP/1.1\nHost: example.com\r\n\r\n")
invalid(400, "RFC 9112 §2.2", "bare LF ending the head", b"GET / HTTP/1.1\r\nHost: example.com\r\n\n")
invalid(400, "RFC 9112 §2.2", "bare LF between header fields", get_with(b"X-A: 1\nX-B: 2\r\n"))
invalid(400, "RFC 9112 §2.2", "bare LF before the request line", b"\nGET / HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §2.2", "bare CR ending the request line", b"GET / HTTP/1.1\r" + H + b"\r\n")
invalid(400, "RFC 9112 §2.2", "bare CR ending a header line", get_with(b"X-A: 1\rX-B: 2\r\n"))
invalid(400, "RFC 9112 §2.2", "bare CR inside a value", get_with(b"X-A: a\rb\r\n"))
invalid(400, "RFC 9112 §2.2", "CR CR LF after the request line", b"GET / HTTP/1.1\r\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §2.2", "CR CR LF after a header", get_with(b"X-A: 1\r\r\n"))
invalid(400, "RFC 9112 §2.2", "CR CR LF as the blank line", b"GET / HTTP/1.1\r\n" + H + b"\r\r\n")
invalid(400, "RFC 9112 §2.2", "LF CR line ending", b"GET / HTTP/1.1\n\r" + H + b"\r\n")
invalid(400, "RFC 9112 §2.2", "whitespace between the request line and the first field",
        b"GET / HTTP/1.1\r\n Host: example.com\r\n\r\n")

# NUL and control bytes (RFC 9110 §5.5, RFC 9112 §3).
invalid(400, "RFC 9112 §3", "NUL in the method", b"GE\x00T / HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3.2", "NUL in the target", b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3.2", "control byte in the target", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3.2", "DEL in the target", b"GET /a\x7fb HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3.2", "ESC in the target", b"GET /\x1b[31m HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §2.3", "NUL in the version", b"GET / HTTP/1.1\x00\r\n" + H + b"\r\n")
invalid(400, "RFC 9110 §5.1", "NUL in a header name", get_with(b"X-A\x00B: 1\r\n"))
invalid(400, "RFC 9110 §5.5", "NUL in a header value", get_with(b"X-A: a\x00b\r\n"))
invalid(400, "RFC 9110 §5.5", "control byte in a header value", get_with(b"X-A: a\x01b\r\n"))
invalid(400, "RFC 9110 §5.5", "ESC in a header value", get_with(b"X-A: \x1b[31mred\r\n"))
invalid(400, "RFC 9110 §5.5", "DEL in a header value", get_with(b"X-A: a\x7fb\r\n"))

# Header name characters (RFC 9110 §5.1, §5.6.2: field-name = token).
invalid(400, "RFC 9110 §5.6.2", "0x85 before a name", get_with(b"\x85X-A: 1\r\n"))
invalid(400, "RFC 9110 §5.6.2", "0x85 after a name", get_with(b"X-A\x85: 1\r\n"))
invalid(400, "RFC 9110 §5.6.2", "0xA0 before Transfer-Encoding",
        cl_post(b"\xa0Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"))
invalid(400, "RFC 9110 §5.6.2", "0xA0 after Content-Length",
        cl_post(b"Content-Length\xa0: 5\r\n", b"hello"))
invalid(400, "RFC 9110 §5.6.2", "UTF-8 letter in a name", get_with("Ünicode: 1\r\n".encode()))
invalid(400, "RFC 9110 §5.6.2", "space inside a name", get_with(b"X A: 1\r\n"))
invalid(400, "RFC 9112 §5.1", "space before the colon", get_with(b"X-A : 1\r\n"))
invalid(400, "RFC 9112 §5.1", "space before the colon of Host", b"GET / HTTP/1.1\r\nHost : example.com\r\n\r\n")
invalid(400, "RFC 9110 §5.6.2", "parenthesis in a name", get_with(b"X(A): 1\r\n"))
invalid(400, "RFC 9110 §5.6.2", "at sign in a name", get_with(b"X@A: 1\r\n"))
invalid(400, "RFC 9110 §5.6.2", "quote in a name", get_with(b'X"A: 1\r\n'))
invalid(400, "RFC 9110 §5.6.2", "empty name", get_with(b": 1\r\n"))
invalid(400, "RFC 9112 §5", "header line without a colon", get_with(b"X-A 1\r\n"))

# obs-fold (RFC 9112 §5.2).
invalid(400, "RFC 9112 §5.2", "obs-fold with a space", get_with(b"X-A: 1\r\n 2\r\n"))
invalid(400, "RFC 9112 §5.2", "obs-fold with a tab", get_with(b"X-A: 1\r\n\t2\r\n"))
invalid(400, "RFC 9112 §5.2", "obs-fold of the Host field", b"GET / HTTP/1.1\r\nHost:\r\n example.com\r\n\r\n")

# Request line (RFC 9112 §3, §2.3).
invalid(400, "RFC 9112 §3", "two spaces after the method", b"GET  / HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3", "tab instead of a space", b"GET\t/ HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3", "space after the version", b"GET / HTTP/1.1 \r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3", "empty method", b" / HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3", "non-token method", b"G(T / HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3", "missing target", b"GET HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3", "HTTP/0.9 request line", b"GET /\r\n\r\n")
invalid(400, "RFC 9112 §2.3", "lower-case protocol name", b"GET / http/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §2.3", "version without a minor", b"GET / HTTP/1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §2.3", "two-digit minor version", b"GET / HTTP/1.10\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §2.3", "huge version number", b"GET / HTTP/11111111111111111111.1\r\n" + H + b"\r\n")
invalid(505, "RFC 9110 §15.6.6", "HTTP/2.0 in an HTTP/1 request line", b"GET / HTTP/2.0\r\n" + H + b"\r\n")
invalid(505, "RFC 9110 §15.6.6", "HTTP/0.9 with a version", b"GET / HTTP/0.9\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3.2", "fragment in the target", b"GET /a#b HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3.2", "relative target", b"GET a/b HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3.2.4", "asterisk-form with GET", b"GET * HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3.2.3", "authority-form with GET", b"GET example.com:80 HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3.2.2", "absolute-form with an unknown scheme", b"GET ftp://example.com/ HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3.2.2", "absolute-form without a host", b"GET http:///p HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9110 §4.2.4", "absolute-form with userinfo",
        b"GET http://user:pw@other.test/ HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3.2", "absolute-form authority with characters a Host may not hold",
        b"GET http://exa<mple\"/ HTTP/1.1\r\n" + H + b"\r\n")

# Host (RFC 9112 §3.2).
invalid(400, "RFC 9112 §3.2", "missing Host on HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n")
invalid(400, "RFC 9112 §3.2", "missing Host on HTTP/1.1 with other fields", b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n")
invalid(400, "RFC 9112 §3.2", "two Host fields", b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n")
invalid(400, "RFC 9112 §3.2", "two identical Host fields", b"GET / HTTP/1.1\r\n" + H + H + b"\r\n")
invalid(400, "RFC 9112 §3.2", "two Host fields on HTTP/1.0", b"GET / HTTP/1.0\r\nHost: a.test\r\nHost: b.test\r\n\r\n")
invalid(400, "RFC 9112 §3.2", "Host with a space", b"GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n")
invalid(400, "RFC 9112 §3.2", "Host with a slash", b"GET / HTTP/1.1\r\nHost: example.com/evil\r\n\r\n")
invalid(400, "RFC 9112 §3.2", "Host with userinfo", b"GET / HTTP/1.1\r\nHost: user@example.com\r\n\r\n")
invalid(400, "RFC 9112 §3.2", "Host with a list of hosts", b"GET / HTTP/1.1\r\nHost: a.test, b.test\r\n\r\n")
invalid(400, "RFC 9112 §3.2", "Host with a non-numeric port", b"GET / HTTP/1.1\r\nHost: example.com:http\r\n\r\n")
invalid(400, "RFC 9112 §3.2", "Host with obs-text", b"GET / HTTP/1.1\r\nHost: ex\xe4mple.com\r\n\r\n")

# Limits one past the defaults.
invalid(414, "RFC 9110 §15.5.15", "request line of 4095 bytes (one past --limit-request-line)",
        b"GET /" + b"a" * 4081 + b" HTTP/1.1\r\n" + H + b"\r\n")
invalid(414, "RFC 9110 §15.5.15", "request line of 64 KiB", b"GET /" + b"a" * (1 << 16) + b" HTTP/1.1\r\n" + H + b"\r\n")
invalid(431, "RFC 6585 §5", "header line of 8191 bytes (one past --limit-request-field_size)",
        get_with(b"X-Big: " + b"v" * 8184 + b"\r\n"))
invalid(431, "RFC 6585 §5", "101 header fields (one past --limit-request-fields)",
        get_with(b"".join(b"X-F%03d: %d\r\n" % (i, i) for i in range(100))))
invalid(431, "RFC 6585 §5", "10,000 header fields", get_with(b"X: y\r\n" * 10000))

# Expect (RFC 9110 §10.1.1).
invalid(417, "RFC 9110 §10.1.1", "an expectation other than 100-continue",
        cl_post(b"Expect: 200-ok\r\nContent-Length: 5\r\n", b"hello"))

# Pipelining after an error (RFC 9112 §9.3.2): the server closes, the rest is never served.
NEXT = b"GET /never HTTP/1.1\r\n" + H + b"\r\n"
invalid(400, "RFC 9112 §9.3.2", "a bad request followed by a good one",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n" + NEXT)
invalid("200,400", "RFC 9112 §9.3.2", "good, bad, good: only the first is served",
        b"GET /first HTTP/1.1\r\n" + H + b"\r\n" + b"GET /bad HTTP/1.1\n\n" + NEXT)
invalid("200,200,400", "RFC 9112 §9.3.2", "two good requests, then a bare LF, then one more",
        b"GET /1 HTTP/1.1\r\n" + H + b"\r\nGET /2 HTTP/1.1\r\n" + H + b"\r\nGET /3 HTTP/1.1\n" + NEXT)
invalid(400, "RFC 9112 §6.3", "CL.TE smuggling a second request",
        cl_post(b"Content-Length: 44\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + NEXT))
invalid(400, "RFC 9112 §6.3", "TE.CL smuggling a second request",
        cl_post(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", b"5c\r\n" + NEXT + b"\r\n0\r\n\r\n"))
invalid("200,400", "RFC 9112 §7.1", "a good chunked request, then one with a bad chunk size",
        chunked_post(b"5\r\nhello\r\n0\r\n\r\n") + chunked_post(b"zz\r\n") + NEXT)
invalid(400, "RFC 9112 §6.3", "conflicting Content-Length before a pipelined request",
        cl_post(b"Content-Length: 0\r\nContent-Length: 51\r\n", NEXT))
invalid("200,400", "RFC 9112 §9.3", "HTTP/1.0 keep-alive, then a bad request",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + b"GET / HTTP/1.1\r\n\r\n" + NEXT)

# Added after the first run (appended so existing case numbers stay put).
invalid(400, "RFC 9110 §4.2.1", "absolute-form with an empty host",
        b"GET http://:80/ HTTP/1.1\r\n" + H + b"\r\n")
invalid(400, "RFC 9112 §3.2", "Host with an unclosed IPv6 literal", b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n")
invalid(400, "RFC 9112 §3.2", "Host with an IPv6 address not in brackets", b"GET / HTTP/1.1\r\nHost: ::1\r\n\r\n")


def write():
    for kind in ("valid", "invalid"):
        path = os.path.join(HERE, kind)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
    for i, (raw, want) in enumerate(VALID, 1):
        with open(os.path.join(HERE, "valid", f"{i:03}.http"), "wb") as f:
            f.write(raw)
        with open(os.path.join(HERE, "valid", f"{i:03}.json"), "w") as f:
            json.dump(want, f, sort_keys=True, indent=1)
            f.write("\n")
    for i, (raw, expect) in enumerate(INVALID, 1):
        with open(os.path.join(HERE, "invalid", f"{i:03}.http"), "wb") as f:
            f.write(raw)
        with open(os.path.join(HERE, "invalid", f"{i:03}.expect"), "w") as f:
            f.write(expect)
    print(f"{len(VALID)} valid and {len(INVALID)} invalid cases")


if __name__ == "__main__":
    write()
