//! One declaration per setting.
//!
//! A daemon declares each setting once, as a clap argument: its flag, its
//! environment variable, its default (shown by `--help`) and its value
//! parser. The TOML config file uses the same declaration: its keys are the
//! arguments' ids (the long names with `_`), and each value it holds becomes
//! that argument's default before the command line is parsed again, so clap
//! itself applies the precedence flag > environment > file > built-in
//! default, and a file value goes through exactly the parser a flag does.
//! There is no second struct for the file and no list of settings to merge,
//! so a setting cannot be forgotten in one of them.
//!
//! Why not serde on the same struct: it parses file values with different
//! rules than the flags (a `NonZeroUsize` from TOML, an enum's spelling) and
//! still needs a merge per field.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Command, FromArgMatches};

/// Why the settings cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or environment is invalid (clap's own error, with
    /// usage; `--help` and `--version` arrive here too).
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid: not TOML, an unknown key, or a value
    /// its setting does not take.
    #[error("invalid config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// How to find and read the config file.
#[derive(Debug, Clone, Copy)]
pub struct FileRules<'a> {
    /// The id of the argument that names the file (e.g. `config`).
    pub file_arg: &'a str,
    /// A file read when `file_arg` is not given, if it exists.
    pub fallback: Option<&'a Path>,
    /// Argument ids that are not settings and may not appear in the file
    /// (the file argument itself is always excluded).
    pub not_in_file: &'a [&'a str],
    /// Whether environment variables count (off to read a file alone).
    pub environment: bool,
}

/// Parsed settings and where each came from.
#[derive(Debug)]
pub struct Parsed<T> {
    /// The settings, every layer applied.
    pub value: T,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// The keys the file set.
    pub from_file: BTreeSet<String>,
    matches: ArgMatches,
}

impl<T> Parsed<T> {
    /// Whether setting `id` was given (flag, environment or file) rather
    /// than left at its built-in default.
    pub fn explicit(&self, id: &str) -> bool {
        match self.matches.value_source(id) {
            Some(ValueSource::CommandLine | ValueSource::EnvVariable) => true,
            Some(ValueSource::DefaultValue) => self.from_file.contains(id),
            _ => false,
        }
    }
}

/// Parses `argv` (program name first) against `command` (whose matches
/// build `T`), layering the config file under flags and environment.
pub fn parse<T: FromArgMatches>(
    mut command: Command,
    argv: &[OsString],
    rules: FileRules<'_>,
) -> Result<Parsed<T>, Error> {
    if !rules.environment {
        let ids: Vec<String> = command
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        for id in ids {
            command = command.mut_arg(id, |a| a.env(None));
        }
    }
    let first = command.clone().try_get_matches_from(argv)?;
    let named = first
        .try_get_one::<PathBuf>(rules.file_arg)
        .ok()
        .flatten()
        .cloned();
    let file = named.or_else(|| rules.fallback.filter(|p| p.exists()).map(Path::to_path_buf));
    let (matches, from_file) = match &file {
        None => (first, BTreeSet::new()),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            let invalid = |message: String| Error::File {
                path: path.clone(),
                message,
            };
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
            let mut from_file = BTreeSet::new();
            for (key, value) in table {
                let settable = key != rules.file_arg
                    && !["help", "version"].contains(&key.as_str())
                    && !rules.not_in_file.contains(&key.as_str())
                    && command.get_arguments().any(|a| a.get_id() == key.as_str());
                if !settable {
                    return Err(invalid(format!("unknown key `{key}`")));
                }
                let text =
                    scalar(&value).map_err(|what| invalid(format!("`{key}` must be {what}")))?;
                command = command.mut_arg(key.clone(), |a| a.default_value(text));
                from_file.insert(key);
            }
            let matches = command.try_get_matches_from(argv).map_err(|e| {
                // The command line parsed alone: the file's values are at fault.
                let rendered = e.to_string();
                let first_line = rendered.lines().next().unwrap_or_default();
                invalid(first_line.trim_start_matches("error: ").to_owned())
            })?;
            (matches, from_file)
        }
    };
    let value = T::from_arg_matches(&matches)?;
    Ok(Parsed {
        value,
        file,
        from_file,
        matches,
    })
}

/// A TOML value as the text a flag would carry; lists joined by commas.
fn scalar(value: &toml::Value) -> Result<String, &'static str> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::Array(_) | toml::Value::Table(_) => Err("a flat list"),
                other => scalar(other),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|items| items.join(",")),
        toml::Value::Table(_) => Err("a value, not a table"),
        toml::Value::Datetime(_) => Err("a string or a number"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use std::num::NonZeroUsize;

    #[derive(Debug, Parser)]
    struct Args {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        check: bool,
        #[arg(long, env = "CONFIG_LAYERS_TEST_PORT", default_value_t = 7)]
        port: u16,
        #[arg(long, default_value_t = NonZeroUsize::new(3).expect("3"))]
        size: NonZeroUsize,
        #[arg(long, value_delimiter = ',')]
        peers: Option<Vec<String>>,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        on: bool,
    }

    fn run(argv: &[&str], env: bool) -> Result<Parsed<Args>, Error> {
        let argv: Vec<OsString> = std::iter::once("prog")
            .chain(argv.iter().copied())
            .map(OsString::from)
            .collect();
        parse(
            Args::command(),
            &argv,
            FileRules {
                file_arg: "config",
                fallback: None,
                not_in_file: &["check"],
                environment: env,
            },
        )
    }

    fn file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.toml");
        std::fs::write(&path, text).expect("write");
        let path = path.to_str().expect("utf-8").to_owned();
        (dir, path)
    }

    #[test]
    fn flag_over_environment_over_file_over_default() {
        let defaults = run(&[], false).expect("parse");
        assert_eq!((defaults.value.port, defaults.value.size.get()), (7, 3));
        assert!(!defaults.explicit("port") && defaults.file.is_none());

        let (_dir, path) = file("port = 9\nsize = 4\npeers = [\"a\", \"b\"]\non = false\n");
        let from_file = run(&["--config", &path], false).expect("parse");
        assert_eq!(from_file.value.port, 9);
        assert_eq!(from_file.value.size.get(), 4);
        assert_eq!(from_file.value.peers, Some(vec!["a".into(), "b".into()]));
        assert!(!from_file.value.on);
        assert!(from_file.explicit("port") && !from_file.explicit("check"));

        let flag = run(&["--config", &path, "--port", "11"], false).expect("parse");
        assert_eq!((flag.value.port, flag.value.size.get()), (11, 4));

        // Only this test sets the variable.
        std::env::set_var("CONFIG_LAYERS_TEST_PORT", "10");
        let env = run(&["--config", &path], true).expect("parse");
        assert_eq!(env.value.port, 10);
        assert!(env.explicit("port"));
        let ignored = run(&["--config", &path], false).expect("parse");
        assert_eq!(ignored.value.port, 9, "environment off: the file counts");
        let flag = run(&["--config", &path, "--port", "12"], true).expect("parse");
        assert_eq!(flag.value.port, 12);
        std::env::remove_var("CONFIG_LAYERS_TEST_PORT");
    }

    #[test]
    fn a_bad_file_is_named_with_its_key() {
        for (text, needle) in [
            ("prot = 1", "unknown key `prot`"),
            ("check = true", "unknown key `check`"),
            ("config = \"other.toml\"", "unknown key `config`"),
            ("size = 0", "--size"),
            ("port = \"ten\"", "--port"),
            ("port = 70000", "--port"),
            ("[port]\nx = 1", "`port` must be a value"),
            ("this is not toml", "x.toml"),
        ] {
            let (_dir, path) = file(text);
            let err = run(&["--config", &path], false).expect_err(text);
            let shown = err.to_string();
            assert!(matches!(err, Error::File { .. }), "{text}: {shown}");
            assert!(
                shown.contains("x.toml") && shown.contains(needle),
                "{text}: {shown}"
            );
        }
        let err = run(&["--config", "/nonexistent/x.toml"], false).expect_err("missing");
        assert!(matches!(err, Error::Read { .. }), "{err}");
        let err = run(&["--size", "0"], false).expect_err("bad flag");
        assert!(matches!(err, Error::Args(_)), "{err}");
    }
}
