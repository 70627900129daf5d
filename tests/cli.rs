//! The `hookgate` binary: check-config over every shipped configuration,
//! every invalid configuration failing with its expected message, and the
//! sign / verify commands.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn hookgate(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    cmd.args(args)
        .env_remove("HOOKGATE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("hookgate binary runs");
    // A command that rejects its arguments exits before reading stdin; the
    // pipe is then closed and the write fails with BrokenPipe, which is not
    // the test's concern (its exit status and stderr are).
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Environment the shipped examples read their secrets from.
const EXAMPLE_ENV: &[(&str, &str)] = &[
    ("SIGSENTRY_SECRET", "dev-secret"),
    ("GITHUB_WEBHOOK_SECRET", "dev-secret"),
];

#[test]
fn every_shipped_config_is_valid() {
    let mut n = 0;
    for entry in std::fs::read_dir("config").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = hookgate(
                &["check-config", "--config", path.to_str().unwrap()],
                b"",
                EXAMPLE_ENV,
            );
            assert!(
                out.status.success(),
                "{}: {}{}",
                path.display(),
                text(&out.stdout),
                text(&out.stderr)
            );
            assert_eq!(text(&out.stdout).trim(), "OK");
            n += 1;
        }
    }
    assert!(n >= 3, "expected the shipped configs, found {n}");
}

#[test]
fn all_schemes_example_covers_every_preset() {
    let src = std::fs::read_to_string("config/all-schemes.toml").unwrap();
    for preset in hookgate::signature::Preset::ALL {
        let line = format!("scheme = \"{}\"", preset.name());
        assert!(
            src.lines().any(|l| l.trim() == line),
            "config/all-schemes.toml has no route for {}",
            preset.name()
        );
    }
}

#[test]
fn every_invalid_config_fails_with_its_message() {
    let dir = Path::new("config/invalid");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        let expect = src
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display()));
        let out = hookgate(
            &["check-config", "--config", path.to_str().unwrap()],
            b"",
            &[],
        );
        assert!(!out.status.success(), "{} was accepted", path.display());
        let err = text(&out.stderr);
        assert!(
            err.contains(expect),
            "{}: wanted {expect:?} in:\n{err}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 10);
}

/// An admin API reachable beyond loopback needs a token: `run` refuses to
/// start without one (naming the key), unless explicitly allowed.
#[test]
fn an_open_admin_listener_without_a_token_refuses_to_start() {
    let open = [
        ("SIGSENTRY_SECRET", "x"),
        ("HOOKGATE_ADMIN__LISTEN", "0.0.0.0:0"),
    ];
    let out = hookgate(&["run", "--config", "config/example.toml"], b"", &open);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("admin.token: required"), "{err}");
    let allowed = [
        ("SIGSENTRY_SECRET", "x"),
        ("HOOKGATE_ADMIN__LISTEN", "0.0.0.0:0"),
        ("HOOKGATE_ADMIN__ALLOW_UNAUTHENTICATED", "true"),
    ];
    let out = hookgate(
        &["check-config", "--config", "config/example.toml"],
        b"",
        &allowed,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let with_token = [
        ("SIGSENTRY_SECRET", "x"),
        ("HOOKGATE_ADMIN__LISTEN", "0.0.0.0:0"),
        ("HOOKGATE_ADMIN__TOKEN_ENV", "ADMIN_T"),
        ("ADMIN_T", "t0ken"),
    ];
    let out = hookgate(
        &["check-config", "--config", "config/example.toml"],
        b"",
        &with_token,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn missing_config_file_is_an_error() {
    let out = hookgate(
        &["check-config", "--config", "config/does-not-exist.toml"],
        b"",
        &[],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("does not exist"));
}

#[test]
fn env_overrides_and_errors_name_the_key() {
    let out = hookgate(
        &["check-config", "--config", "config/example.toml"],
        b"",
        &[
            ("SIGSENTRY_SECRET", "x"),
            ("HOOKGATE_SERVER__MAX_BODY", "not-a-size"),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("server.max_body"),
        "{}",
        text(&out.stderr)
    );
    // Variables without a section (HOOKGATE_ADMIN_TOKEN and the like) are not config keys.
    let out = hookgate(
        &["check-config", "--config", "config/example.toml"],
        b"",
        &[
            ("SIGSENTRY_SECRET", "x"),
            ("HOOKGATE_ADMIN_TOKEN", "t"),
            ("HOOKGATE_SERVER__MAX_BODY", "2MiB"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn sign_then_verify_round_trips_for_every_preset() {
    let body = br#"{"analysisId":"anl_abc123","severity":"high"}"#;
    for scheme in hookgate::signature::Preset::ALL {
        let name = scheme.name();
        let secret = if matches!(name, "standard-webhooks" | "svix") {
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        } else {
            "cli-secret"
        };
        let out = hookgate(
            &[
                "sign", "--scheme", name, "--secret", secret, "--id", "evt_1",
            ],
            body,
            &[],
        );
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        // Mailgun signs inside the body: `sign` prints the body to send.
        let in_body = name == "mailgun";
        let (lines, signed_body): (Vec<String>, Vec<u8>) = if in_body {
            (Vec::new(), text(&out.stdout).trim_end().as_bytes().to_vec())
        } else {
            let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
            assert!(!lines.is_empty(), "{name} printed no header");
            (lines, body.to_vec())
        };
        let mut args = vec!["verify", "--scheme", name, "--secret-env", "S"];
        for l in &lines {
            args.push("-H");
            args.push(l);
        }
        let ok = hookgate(&args, &signed_body, &[("S", secret)]);
        assert!(
            ok.status.success(),
            "{name}: {}{}",
            text(&ok.stdout),
            text(&ok.stderr)
        );
        assert_eq!(text(&ok.stdout).trim(), "valid");
        // GitLab's token and Postmark's basic auth do not cover the body;
        // Mailgun's tampered body has lost its signature fields.
        let tampered = match name {
            "gitlab" | "postmark" => None,
            "mailgun" => Some("signature_missing"),
            _ => Some("signature_mismatch"),
        };
        if let Some(code) = tampered {
            let bad = hookgate(&args, b"tampered", &[("S", secret)]);
            assert_eq!(bad.status.code(), Some(1), "{name}");
            assert!(
                text(&bad.stdout).contains(code),
                "{name}: {}",
                text(&bad.stdout)
            );
        }
        let wrong = hookgate(&args, &signed_body, &[("S", "other-secret-value")]);
        assert_eq!(
            wrong.status.code(),
            Some(1),
            "{name} accepted a wrong secret"
        );
    }
}

#[test]
fn signed_url_flags_round_trip() {
    // Square signs the URL, Twilio the URL as called (query included) and
    // the sorted form parameters; `verify` takes the route's signed_url and
    // the request's query apart.
    let cases: [(&str, &[u8], &str, Option<&str>); 2] = [
        (
            "square",
            b"{\"event_id\":\"e1\"}",
            "https://hooks.example.com/square",
            None,
        ),
        (
            "twilio",
            b"CallSid=CA1&From=%2B15550001111",
            "https://hooks.example.com/twilio",
            Some("route=a"),
        ),
    ];
    for (scheme, body, url, query) in cases {
        let called = match query {
            Some(q) => format!("{url}?{q}"),
            None => url.to_string(),
        };
        let out = hookgate(
            &[
                "sign",
                "--scheme",
                scheme,
                "--secret",
                "k",
                "--signed-url",
                &called,
            ],
            body,
            &[],
        );
        assert!(out.status.success(), "{scheme}: {}", text(&out.stderr));
        let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
        let verify = |signed_url: &str, query: Option<&str>| {
            let mut args = vec!["verify", "--scheme", scheme, "--secret", "k"];
            for l in &lines {
                args.extend(["-H", l.as_str()]);
            }
            args.extend(["--signed-url", signed_url]);
            if let Some(q) = query {
                args.extend(["--query", q]);
            }
            hookgate(&args, body, &[])
        };
        let ok = verify(url, query);
        assert_eq!(
            text(&ok.stdout).trim(),
            "valid",
            "{scheme}: {}",
            text(&ok.stderr)
        );
        // Another URL (a proxy's view of it) does not verify.
        let other = verify("http://10.0.0.5:8080/square", query);
        assert_eq!(other.status.code(), Some(1), "{scheme}");
        assert!(text(&other.stdout).contains("signature_mismatch"));
        if query.is_some() {
            let no_query = verify(url, None);
            assert!(
                text(&no_query.stdout).contains("signature_mismatch"),
                "{scheme}"
            );
        }
    }
}

#[test]
fn verify_reports_missing_header() {
    let out = hookgate(
        &["verify", "--scheme", "github", "--secret", "s"],
        b"{}",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("signature_missing"));
}

#[test]
fn sign_rejects_unknown_scheme() {
    let out = hookgate(&["sign", "--scheme", "nope", "--secret", "s"], b"{}", &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--scheme"));
}
