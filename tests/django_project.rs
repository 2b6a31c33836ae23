//! The Django project in `examples/mysite`, made with `django-admin startproject mysite` and
//! served the way its users deploy it: `minigun --chdir examples/mysite mysite.wsgi`, which
//! imports the generated `mysite/wsgi.py` and serves its `application`.
//!
//! Each test first does what a release does before the server starts: `manage.py migrate` and
//! `manage.py collectstatic`, into a temporary directory named by `DJANGO_DATABASE_PATH` and
//! `DJANGO_STATIC_ROOT` (see `mysite/settings.py`), so nothing is written into the repository.
//! collectstatic rather than `WHITENOISE_USE_FINDERS`: WhiteNoise's documentation keeps finders
//! for development, and a deployment collects once per release so that the hashed, compressed
//! copies exist and `{% static %}` can link to them; without the collected manifest the pages
//! fail with 500, which is how a forgotten collectstatic shows in production.
//!
//! Without Django and WhiteNoise installed the tests skip with a message; tests/run.sh installs
//! them and sets `MINIGUN_REQUIRE_FRAMEWORKS=1` so a skip there fails instead.

mod common;

use common::{
    http_get, python_client, python_exe, repo_root, run_bounded, skip_without, Conn, Response,
    Server, TempDir,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The project directory, as `--chdir` names it.
const PROJECT: &str = "examples/mysite";

/// The admin account `createsuperuser` makes for the admin test.
const ADMIN_PASSWORD: &str = "correct-horse-battery-staple-42";

/// One release of the site: its database and collected static files in a temporary directory.
struct Release {
    /// Holds `db.sqlite3` and `static/`; removed when the test ends.
    dir: TempDir,
}

impl Release {
    /// Migrates a fresh database and collects the static files, or returns `None` when the
    /// project's packages are not importable (see [`skip_without`]).
    fn prepare() -> Option<Release> {
        if skip_without("django") || skip_without("whitenoise") || skip_without("requests") {
            return None;
        }
        let release = Release {
            dir: TempDir::new("mysite"),
        };
        release.manage(&["migrate", "--noinput"], &[]);
        release.manage(&["collectstatic", "--noinput"], &[]);
        Some(release)
    }

    /// Where collectstatic put the files WhiteNoise serves.
    fn static_root(&self) -> PathBuf {
        self.dir.path().join("static")
    }

    /// The settings this release gives Django, for manage.py and the server alike. No bytecode
    /// is written either, so a test run leaves the source tree as it found it.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "DJANGO_STATIC_ROOT",
                self.static_root().display().to_string(),
            ),
            (
                "DJANGO_DATABASE_PATH",
                self.dir.path().join("db.sqlite3").display().to_string(),
            ),
            ("PYTHONDONTWRITEBYTECODE", "1".to_owned()),
        ]
    }

    /// Runs `python manage.py ARGS` in the project with this release's settings plus `extra`.
    ///
    /// # Panics
    /// If the command fails or runs for more than a minute.
    fn manage(&self, args: &[&str], extra: &[(&str, &str)]) {
        let mut command = Command::new(python_exe());
        command
            .arg("manage.py")
            .args(args)
            .current_dir(repo_root().join(PROJECT));
        for (key, value) in self.env() {
            command.env(key, value);
        }
        for (key, value) in extra {
            command.env(key, value);
        }
        let out = run_bounded(&mut command, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "manage.py {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `minigun --chdir examples/mysite mysite.wsgi`, as the README tells users to.
    fn serve(&self) -> Server {
        let mut launch = Server::build(&["--chdir", PROJECT, "mysite.wsgi"]);
        for (key, value) in self.env() {
            launch = launch.env(key, &value);
        }
        launch.start()
    }
}

/// The `href` of every `<link rel="stylesheet">` in `html`.
fn stylesheets(html: &str) -> Vec<String> {
    html.split("<link rel=\"stylesheet\" href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// Sends `GET`/`HEAD path` with `headers` on `conn` and reads the whole response.
fn request(conn: &mut Conn, method: &str, path: &str, headers: &str) -> Response {
    conn.send(format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n").as_bytes());
    conn.read_response(method)
}

/// Reads a file the test compares a response with.
fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn serves_the_guestbook_from_the_generated_wsgi_module() {
    let Some(release) = Release::prepare() else {
        return;
    };
    let server = release.serve();
    let page = http_get(server.port(), "/");
    assert_eq!(page.status, 200, "GET /: {}", page.text());
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        page.headers
    );
    let html = page.text();
    assert!(
        html.contains("<h2>Guestbook</h2>") && html.contains("No one has signed yet."),
        "{html}"
    );
    assert!(
        html.contains("name=\"csrfmiddlewaretoken\""),
        "no CSRF token in the form: {html}"
    );
    assert!(
        page.headers
            .iter()
            .any(|(n, v)| n == "set-cookie" && v.contains("csrftoken=")),
        "no CSRF cookie: {:?}",
        page.headers
    );
    // {% static %} links to the name collectstatic gave the file: its content hash inside.
    let css = stylesheets(&html);
    assert!(
        css.len() == 1 && css[0].starts_with("/static/hello.") && css[0].ends_with(".css"),
        "stylesheet links: {css:?}"
    );
    assert_ne!(css[0], "/static/hello.css", "the link has no content hash");
}

#[test]
fn serves_static_files_through_whitenoise() {
    let Some(release) = Release::prepare() else {
        return;
    };
    let server = release.serve();
    let port = server.port();
    let href = stylesheets(&http_get(port, "/").text())
        .pop()
        .expect("the home page links its stylesheet");
    let source = read(&repo_root().join(PROJECT).join("static/hello.css"));

    // Every request below goes over one keep-alive connection, so a body sent where none was
    // due (HEAD, 304) or a wrong length would garble the response after it.
    let mut conn = Conn::open(port);
    let css = request(&mut conn, "GET", &href, "");
    assert_eq!(css.status, 200, "GET {href}: {}", css.text());
    assert!(
        css.header("content-type")
            .is_some_and(|t| t.starts_with("text/css")),
        "{:?}",
        css.headers
    );
    assert_eq!(
        css.header("content-length"),
        Some(source.len().to_string().as_str())
    );
    assert!(
        css.body == source,
        "the stylesheet's bytes differ from static/hello.css"
    );
    assert!(
        css.header("cache-control")
            .is_some_and(|c| c.contains("immutable")),
        "a hashed name is cached for good: {:?}",
        css.headers
    );

    let head = request(&mut conn, "HEAD", &href, "");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), css.header("content-type"));
    assert_eq!(head.header("content-length"), css.header("content-length"));

    // A browser revalidating its copy.
    let etag = css.header("etag").expect("WhiteNoise sends an ETag");
    let not_modified = request(
        &mut conn,
        "GET",
        &href,
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!(not_modified.status, 304, "{:?}", not_modified.headers);
    let modified = css
        .header("last-modified")
        .expect("WhiteNoise sends Last-Modified");
    let not_modified = request(
        &mut conn,
        "GET",
        &href,
        &format!("If-Modified-Since: {modified}\r\n"),
    );
    assert_eq!(not_modified.status, 304, "{:?}", not_modified.headers);

    // A resumed download: WhiteNoise hands the server a slice of the file that has no fileno,
    // so this takes wsgi.file_wrapper's read() path rather than sendfile.
    let part = request(&mut conn, "GET", &href, "Range: bytes=100-199\r\n");
    assert_eq!(part.status, 206, "{:?}", part.headers);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 100-199/{}", source.len()).as_str())
    );
    assert!(part.body == source[100..200], "the range's bytes differ");

    // A larger file (the admin's jQuery, ~280 KB) goes out in many writes, plain and gzipped.
    let jquery = "admin/js/vendor/jquery/jquery.js";
    let collected = release.static_root().join(jquery);
    let plain = request(&mut conn, "GET", &format!("/static/{jquery}"), "");
    assert_eq!(plain.status, 200, "{:?}", plain.headers);
    assert!(plain.body == read(&collected), "jquery.js arrived altered");
    let gzipped = request(
        &mut conn,
        "GET",
        &format!("/static/{jquery}"),
        "Accept-Encoding: gzip\r\n",
    );
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    assert!(
        gzipped.body == read(&collected.with_extension("js.gz")),
        "jquery.js.gz arrived altered"
    );

    // The connection still serves the app after all the static files.
    let page = request(&mut conn, "GET", "/", "");
    assert_eq!(page.status, 200);
}

#[test]
fn accepts_a_form_post_only_with_its_csrf_token() {
    let Some(release) = Release::prepare() else {
        return;
    };
    let server = release.serve();
    python_client(
        server.port(),
        r#"
import re, requests

def token_in(html):
    m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert m, html
    return m.group(1)

with requests.Session() as s:
    r = s.get(BASE + "/", timeout=20)
    assert r.status_code == 200, r.status_code
    assert "csrftoken" in s.cookies, r.headers
    token = token_in(r.text)
    # As a browser posts the form: the cookie, the hidden field, and its Origin.
    signed = {"csrfmiddlewaretoken": token, "name": "Ada Lovelace", "message": "Bonjour, café ☕"}
    r = s.post(BASE + "/", data=signed, headers={"Origin": BASE}, allow_redirects=False,
               timeout=20)
    assert r.status_code == 302 and r.headers["Location"] == "/", (r.status_code, r.headers)
    r = s.get(BASE + "/", timeout=20)
    assert "<strong>Ada Lovelace</strong>: Bonjour, café ☕" in r.text, r.text

    # An invalid form comes back with its errors, not a redirect.
    r = s.post(BASE + "/", data={"csrfmiddlewaretoken": token, "name": "", "message": "x"},
               headers={"Origin": BASE}, allow_redirects=False, timeout=20)
    assert r.status_code == 200 and 'class="errorlist' in r.text, (r.status_code, r.text)

    # The cookie without the form's token: a cross-site form post.
    r = s.post(BASE + "/", data={"name": "Mallory", "message": "forged"}, timeout=20)
    assert r.status_code == 403 and "CSRF verification failed" in r.text, (r.status_code, r.text)

# Neither cookie nor token.
r = requests.post(BASE + "/", data={"name": "Mallory", "message": "forged"}, timeout=20)
assert r.status_code == 403, r.status_code

r = requests.get(BASE + "/", timeout=20)
assert "Ada Lovelace" in r.text and "Mallory" not in r.text, r.text
"#,
    );
}

#[test]
fn renders_the_admin_login_page_and_logs_in() {
    let Some(release) = Release::prepare() else {
        return;
    };
    release.manage(
        &[
            "createsuperuser",
            "--noinput",
            "--username",
            "admin",
            "--email",
            "admin@example.com",
        ],
        &[("DJANGO_SUPERUSER_PASSWORD", ADMIN_PASSWORD)],
    );
    let server = release.serve();
    python_client(
        server.port(),
        &format!(
            "PASSWORD = {ADMIN_PASSWORD:?}\n{}",
            r#"
import re, requests

with requests.Session() as s:
    r = s.get(BASE + "/admin/", timeout=20)
    assert r.status_code == 200 and r.url == BASE + "/admin/login/?next=/admin/", (r.status_code, r.url)
    assert "Django administration" in r.text, r.text
    assert 'name="username"' in r.text and 'name="password"' in r.text, r.text
    # The page's look comes from the admin's collected stylesheets.
    sheets = re.findall(r'<link rel="stylesheet" href="([^"]+)"', r.text)
    assert any("admin/css/base." in href for href in sheets), sheets
    for href in sheets:
        css = s.get(BASE + href, timeout=20)
        assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css"), href
        assert len(css.content) > 0, href
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', r.text).group(1)

    form = {"csrfmiddlewaretoken": token, "username": "admin", "password": "wrong",
            "next": "/admin/"}
    r = s.post(BASE + "/admin/login/?next=/admin/", data=form, allow_redirects=False, timeout=20)
    assert r.status_code == 200 and "Please enter the correct username" in r.text, r.status_code

    form["password"] = PASSWORD
    r = s.post(BASE + "/admin/login/?next=/admin/", data=form, allow_redirects=False, timeout=20)
    assert r.status_code == 302 and r.headers["Location"] == "/admin/", (r.status_code, r.headers)
    assert "sessionid" in s.cookies, r.headers
    r = s.get(BASE + "/admin/", timeout=20)
    assert r.status_code == 200 and "Site administration" in r.text, r.status_code
    assert "Guestbook" in r.text and "Entries" in r.text, r.text
"#
        ),
    );
}

#[test]
fn answers_unknown_pages_with_the_projects_404_page() {
    let Some(release) = Release::prepare() else {
        return;
    };
    let server = release.serve();
    let port = server.port();
    let missing = http_get(port, "/no/such/page");
    assert_eq!(missing.status, 404);
    assert!(
        missing.text().contains("<h2>Page not found</h2>")
            && missing.text().contains("<code>/no/such/page</code>"),
        "not the project's 404.html: {}",
        missing.text()
    );
    // A static URL with no file behind it falls through WhiteNoise to Django.
    assert_eq!(http_get(port, "/static/no-such-file.css").status, 404);

    // A Host outside ALLOWED_HOSTS is refused by Django, and the server goes on serving.
    let mut conn = Conn::open(port);
    conn.send(b"GET / HTTP/1.1\r\nHost: attacker.example\r\n\r\n");
    assert_eq!(conn.read_response("GET").status, 400);
    assert_eq!(http_get(port, "/").status, 200);
}
