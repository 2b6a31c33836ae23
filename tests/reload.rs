//! SIGHUP re-reads the configuration, as gunicorn does: a changed worker count in the config
//! file takes effect for the new generation of workers without a restart.

mod common;

use std::time::Duration;

use common::{Server, WAIT};

#[test]
fn hup_rereads_the_config_file() {
    let dir = std::env::temp_dir().join(format!("minigun-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let conf = dir.join("minigun.conf.py");
    std::fs::write(&conf, "workers = 1\n").expect("write config");
    let conf_arg = conf.to_string_lossy().into_owned();
    let server = Server::start(&["-c", &conf_arg, "--chdir", "examples", "hello:app"]);
    let first = server.wait_for_workers(1, WAIT);

    std::fs::write(&conf, "workers = 3\n").expect("rewrite config");
    server.signal(libc::SIGHUP);
    let pids = server.wait_for_workers(3, WAIT);
    assert!(
        pids.iter().all(|p| !first.contains(p)),
        "the old worker should be retired: {first:?} -> {pids:?}"
    );
    assert_eq!(common::http_get(server.port(), "/").status, 200);
    // Still three once the reload has settled: the new count is the wanted count.
    assert!(common::poll(Duration::from_secs(3), || server
        .worker_pids()
        .len()
        == 3));
    let _ = std::fs::remove_dir_all(&dir);
}
