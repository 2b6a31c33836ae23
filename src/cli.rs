//! The command line: `minigun [OPTIONS] MODULE:APP`.
//!
//! Flags are looked up in [`config::SETTINGS`], so every setting has exactly the spellings
//! gunicorn gives it and scripts carry over. Accepted shapes: `--workers 4`, `--workers=4`,
//! `-w 4`, `-w4`. `MINIGUN_CMD_ARGS` holds more flags in one string (split like a shell would,
//! with quotes); they rank between the config file and the real command line.

use crate::config::{self, ConfigError, Setting, Settings};

/// What the command line asks for.
pub enum Command {
    /// Serve with these settings.
    Run(Box<Settings>),
    /// Print this text (help or version) and exit 0.
    Print(String),
}

/// One parsed source: the settings it names, in order, and the positional app.
struct Parsed {
    values: Vec<(&'static Setting, String)>,
    app: Option<String>,
    help: bool,
    version: bool,
}

fn parse_args(args: &[String], source: &str) -> Result<Parsed, ConfigError> {
    let mut parsed = Parsed {
        values: Vec::new(),
        app: None,
        help: false,
        version: false,
    };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        match arg.as_str() {
            "-h" | "--help" => {
                parsed.help = true;
                continue;
            }
            "-v" | "--version" => {
                parsed.version = true;
                continue;
            }
            "--" => {
                for rest in &args[i..] {
                    set_app(&mut parsed, rest, source)?;
                }
                break;
            }
            _ => {}
        }
        if !arg.starts_with('-') || arg == "-" {
            set_app(&mut parsed, arg, source)?;
            continue;
        }
        // Split `--flag=value` and `-wVALUE`.
        let (flag, inline) = if let Some(rest) = arg.strip_prefix("--") {
            match rest.split_once('=') {
                Some((f, v)) => (format!("--{f}"), Some(v.to_owned())),
                None => (arg.clone(), None),
            }
        } else if let Some((i, _)) = arg.char_indices().nth(2) {
            // `-wVALUE`: the flag is the dash and the next character, whatever its width.
            (arg[..i].to_owned(), Some(arg[i..].to_owned()))
        } else {
            (arg.clone(), None)
        };
        let setting = config::by_flag(&flag)
            .ok_or_else(|| ConfigError(format!("{source}unrecognized arguments: {arg}")))?;
        let value = if setting.metavar.is_some_and(|m| m.starts_with('[')) {
            // An optional value (argparse's `nargs='?'`, `--proxy-protocol [MODE]`): inline,
            // or the next word when the setting takes it, else the flag alone means "true". So
            // `--proxy-protocol app:app` serves app:app, as it did when gunicorn's flag was a
            // switch.
            match inline {
                Some(v) => v,
                None => match args.get(i) {
                    Some(next) if (setting.apply)(&mut Settings::default(), next).is_ok() => {
                        i += 1;
                        next.clone()
                    }
                    _ => "true".to_owned(),
                },
            }
        } else if setting.metavar.is_none() {
            if inline.is_some() {
                return Err(ConfigError(format!(
                    "{source}argument {flag}: ignored explicit argument '{}'",
                    inline.unwrap_or_default()
                )));
            }
            "true".to_owned()
        } else if let Some(v) = inline {
            v
        } else if i < args.len() {
            i += 1;
            args[i - 1].clone()
        } else {
            return Err(ConfigError(format!(
                "{source}argument {}: expected one argument",
                setting.flags.join("/")
            )));
        };
        parsed.values.push((setting, value));
    }
    Ok(parsed)
}

fn set_app(parsed: &mut Parsed, arg: &str, source: &str) -> Result<(), ConfigError> {
    if parsed.app.is_some() {
        return Err(ConfigError(format!(
            "{source}unrecognized arguments: {arg}"
        )));
    }
    parsed.app = Some(arg.to_owned());
    Ok(())
}

/// Splits a string of flags the way a POSIX shell would split words: whitespace separates,
/// single and double quotes group, backslash escapes.
fn shell_split(s: &str) -> Result<Vec<String>, ConfigError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(ConfigError("MINIGUN_CMD_ARGS: unclosed quote".into())),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => word.extend(chars.next()),
                        Some(c) => word.push(c),
                        None => return Err(ConfigError("MINIGUN_CMD_ARGS: unclosed quote".into())),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Parses the process's arguments and environment into settings, in precedence order:
/// defaults < config file < `MINIGUN_CMD_ARGS` < command line.
pub fn parse(args: &[String]) -> Result<Command, ConfigError> {
    let cli = parse_args(args, "")?;
    if cli.help {
        return Ok(Command::Print(help()));
    }
    if cli.version {
        return Ok(Command::Print(format!(
            "minigun (version {})\n",
            env!("CARGO_PKG_VERSION")
        )));
    }
    let env = match std::env::var("MINIGUN_CMD_ARGS") {
        Ok(s) if !s.trim().is_empty() => parse_args(&shell_split(&s)?, "MINIGUN_CMD_ARGS: ")?,
        _ => Parsed {
            values: Vec::new(),
            app: None,
            help: false,
            version: false,
        },
    };
    let config_path = [&cli, &env]
        .iter()
        .find_map(|p| {
            p.values
                .iter()
                .rev()
                .find(|(s, _)| s.name == "config")
                .map(|(_, v)| v.clone())
        })
        .or_else(default_config_file);
    let mut settings = Settings::default();
    if let Some(path) = config_path {
        // Absolute: the file runs again in the workers, after --chdir.
        let path = std::path::PathBuf::from(path);
        let path = match std::env::current_dir() {
            Ok(dir) if path.is_relative() => dir.join(path),
            _ => path,
        };
        settings.apply_config_file(&path)?;
        settings.config = Some(path);
    }
    for (source, parsed) in [("MINIGUN_CMD_ARGS: ", &env), ("", &cli)] {
        settings.start_source();
        for (setting, value) in &parsed.values {
            if setting.name != "config" {
                settings.apply(setting, value, &format!("{source}argument "))?;
            }
        }
        if let Some(app) = &parsed.app {
            settings.app = Some(app.clone());
        }
    }
    settings.validate()?;
    Ok(Command::Run(Box::new(settings)))
}

/// The config file read when none is named: `./minigun.conf.py`, else `./gunicorn.conf.py`
/// (gunicorn reads the latter by default), in the directory minigun is started in.
fn default_config_file() -> Option<String> {
    ["minigun.conf.py", "gunicorn.conf.py"]
        .into_iter()
        .find(|f| std::path::Path::new(f).is_file())
        .map(|f| format!("./{f}"))
}

/// The `--help` text, generated from the settings table.
pub fn help() -> String {
    let mut out = String::from(
        "usage: minigun [OPTIONS] MODULE:APP\n\n\
         A prefork WSGI server. MODULE:APP names the WSGI callable: `hello:app`,\n\
         `pkg.module:application` (the default name), or a factory: `app:create_app()`.\n\n\
         options:\n  -h, --help            show this help and exit\n  \
         -v, --version         show the version and exit\n",
    );
    for s in config::SETTINGS.iter().filter(|s| !s.flags.is_empty()) {
        let mut left = s.flags.join(", ");
        if let Some(m) = s.metavar {
            left.push(' ');
            left.push_str(m);
        }
        if left.len() < 22 {
            out.push_str(&format!("  {left:<22}{}\n", s.doc));
        } else {
            out.push_str(&format!("  {left}\n  {:<22}{}\n", "", s.doc));
        }
    }
    out.push_str(
        "\nsignals to the master: TERM/INT graceful stop, QUIT fast stop, HUP reload workers,\n\
         TTIN/TTOU one worker more/less, USR1 reopen log files, USR2 upgrade to the binary on\n\
         disk (a new master beside this one), WINCH (old master of an upgrade) retire workers.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Settings, ConfigError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args)? {
            Command::Run(s) => Ok(*s),
            Command::Print(_) => panic!("expected settings"),
        }
    }

    #[test]
    fn accepts_gunicorn_spellings() {
        let s = run(&[
            "-w4",
            "--threads=8",
            "-b",
            "127.0.0.1:9000",
            "--bind",
            "unix:/tmp/x.sock",
            "--limit-request-field_size",
            "100",
            "--preload",
            "app:app",
        ])
        .expect("valid flags");
        assert_eq!(s.workers, 4);
        assert_eq!(s.threads, 8);
        assert_eq!(s.bind, vec!["127.0.0.1:9000", "unix:/tmp/x.sock"]);
        assert_eq!(s.limit_request_field_size, 100);
        assert!(s.preload_app);
        assert_eq!(s.app.as_deref(), Some("app:app"));
    }

    #[test]
    fn proxy_protocol_takes_an_optional_mode_as_gunicorn_does() {
        use crate::http::proxy::{AllowList, Mode};
        let s = run(&["--proxy-protocol", "app:app"]).expect("bare flag");
        assert_eq!(s.proxy_protocol, Mode::Auto);
        assert_eq!(s.app.as_deref(), Some("app:app"));
        assert_eq!(s.proxy_allow_ips, AllowList::default());
        let s = run(&["--proxy-protocol", "v2", "app:app"]).expect("separate mode");
        assert_eq!(s.proxy_protocol, Mode::V2);
        let s = run(&["--proxy-protocol=v1", "-w", "2", "app:app"]).expect("inline mode");
        assert_eq!(s.proxy_protocol, Mode::V1);
        assert_eq!(s.workers, 2);
        let s = run(&["app:app", "--proxy-protocol", "--workers", "3"]).expect("before a flag");
        assert_eq!(s.proxy_protocol, Mode::Auto);
        assert_eq!(s.workers, 3);
        assert_eq!(
            run(&["app:app"]).expect("default").proxy_protocol,
            Mode::Off
        );
        let e = run(&["--proxy-protocol=v3", "app:app"]).expect_err("bad mode");
        assert!(
            e.0.contains("--proxy-protocol") && e.0.contains("v3"),
            "{e}"
        );
        let s = run(&["--proxy-allow-from", "10.0.0.0/8, ::1", "app:app"]).expect("networks");
        assert_eq!(s.proxy_allow_ips.to_string(), "10.0.0.0/8,::1");
        let e = run(&["--proxy-allow-from", "proxy.internal", "app:app"]).expect_err("a name");
        assert!(e.0.contains("--proxy-allow-from"), "{e}");
    }

    #[test]
    fn names_the_bad_flag() {
        let e = run(&["--workers", "zero", "app:app"]).expect_err("error");
        assert!(e.0.contains("--workers") && e.0.contains("zero"), "{e}");
        let e = run(&["--no-such-flag", "app:app"]).expect_err("error");
        assert!(e.0.contains("--no-such-flag"), "{e}");
        let e = run(&["--workers"]).expect_err("error");
        assert!(e.0.contains("expected one argument"), "{e}");
    }

    #[test]
    fn host_and_port_build_a_bind() {
        let s = run(&["--host", "0.0.0.0", "--port", "9001", "a:b"]).expect("valid");
        assert_eq!(s.bind, vec!["0.0.0.0:9001"]);
    }

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            shell_split(r#"-w 2 --access-logformat '%(h)s "x"' a\ b"#).expect("valid"),
            vec!["-w", "2", "--access-logformat", "%(h)s \"x\"", "a b"]
        );
    }
}
