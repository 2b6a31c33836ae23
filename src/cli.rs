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
        let value = if setting.metavar.is_none() {
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
    let config_path = [&cli, &env].iter().find_map(|p| {
        p.values
            .iter()
            .rev()
            .find(|(s, _)| s.name == "config")
            .map(|(_, v)| v.clone())
    });
    let mut settings = Settings::default();
    if let Some(path) = config_path {
        let path = std::path::PathBuf::from(path);
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
