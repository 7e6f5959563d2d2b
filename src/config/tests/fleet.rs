//! hosts.toml: hosts, their kinds and keys, ssh settings, and the
//! property that an error always points at a line of the file.

use super::*;

#[test]
fn design_fleet_resolves() {
    let f = fleet(FLEET).unwrap();
    assert_eq!(f.file, Path::new("conf/hosts.toml"));
    assert_eq!(
        f.hosts,
        vec![
            Host {
                name: "local".into(),
                transport: Transport::Local,
                slots: 2,
                device: Device::Auto,
                threads: None,
                cost_per_hour: 0.0
            },
            Host {
                name: "gpu1".into(),
                transport: Transport::Ssh(SshHost {
                    address: "gpu1.lab:22".into(),
                    user: Some("ml".into()),
                    identity: Some(PathBuf::from("~/.ssh/id_ed25519")),
                    known_hosts: None,
                    trust: Trust::Strict,
                    worker_binary: None,
                    reconnect_window_secs: DEFAULT_RECONNECT_WINDOW_SECS
                }),
                slots: 1,
                device: Device::Gpu,
                threads: None,
                cost_per_hour: 2.5
            }
        ]
    );
}

fn ssh(extra: &str) -> String {
    format!("[[host]]\nname = \"a\"\nkind = \"ssh\"\naddress = \"box\"\n{extra}\n")
}

fn one_ssh(extra: &str) -> SshHost {
    let Transport::Ssh(s) = fleet(&ssh(extra)).unwrap().hosts.remove(0).transport else {
        panic!("expected an ssh host");
    };
    s
}

#[test]
fn host_written_as_a_single_table_asks_for_double_brackets() {
    let text = "[host]\nname = \"a\"\nkind = \"local\"\n";
    let e = error_at(fleet(text), text, "[host]");
    assert_contains(
        &e,
        &["[host] is a table; expected a list, written [[host]]"],
    );
}

#[test]
fn missing_key_of_an_inline_table_names_the_table() {
    let text = "host = [{ name = \"a\" }]\n";
    let e = error_at(fleet(text), text, "host");
    assert_contains(&e, &["host is missing the required key 'kind'"]);
}

#[test]
fn fleet_needs_a_host() {
    for text in ["", "# nothing\n", "host = []\n"] {
        let e = fleet(text).unwrap_err();
        assert_eq!((e.line, e.column), (Some(1), Some(1)));
        assert_contains(&e, &["no [[host]] entries; expected at least one"]);
    }
}

#[test]
fn duplicate_host_names_name_both_lines() {
    let text = format!(
        "{}{}",
        ssh(""),
        ssh("").replace("address = \"box\"", "address = \"other\"")
    );
    let e = fleet(&text).unwrap_err();
    assert_eq!(e.line, Some(7));
    assert_contains(
        &e,
        &["host name 'a' on line 7 is already used by the host on line 2"],
    );
}

#[test]
fn host_name_and_kind_rules() {
    let text = "[[host]]\nname = \"a b\"\nkind = \"local\"\n";
    let e = error_at(fleet(text), text, "name");
    assert_contains(&e, &["[[host]] name = 'a b' contains ' '"]);
    let text = "[[host]]\nname = \"a\"\nkind = \"remote\"\n";
    let e = error_at(fleet(text), text, "kind");
    assert_contains(
        &e,
        &["host 'a': kind = 'remote' is not a host kind; expected 'local', 'ssh' or 'slurm'"],
    );
    let text = "[[host]]\nname = \"a\"\n";
    let e = error_at(fleet(text), text, "[[host]]");
    assert_contains(&e, &["[[host]] is missing the required key 'kind'"]);
}

#[test]
fn local_host_refuses_ssh_keys() {
    for line in [
        "address = \"x\"",
        "port = 22",
        "user = \"u\"",
        "identity = \"k\"",
        "known_hosts = \"k\"",
        "trust = \"strict\"",
        "worker_binary = \"w\"",
    ] {
        let key = line.split(' ').next().unwrap();
        let text = format!("[[host]]\nname = \"l\"\nkind = \"local\"\n{line}\n");
        let e = error_at(fleet(&text), &text, line);
        assert_contains(&e, &[&format!("host 'l': {key} is only for kind = 'ssh'")]);
    }
}

#[test]
fn at_most_one_local_host() {
    let text =
        "[[host]]\nname = \"a\"\nkind = \"local\"\n[[host]]\nname = \"b\"\nkind = \"local\"\n";
    let e = fleet(text).unwrap_err();
    assert_eq!(e.line, Some(6));
    assert_contains(
        &e,
        &["host 'b' is a second kind = 'local' host (the first is 'a' on line 2)"],
    );
}

#[test]
fn password_is_refused_and_not_offered_as_a_key() {
    let text = ssh("password = \"hunter2\"");
    let e = error_at(fleet(&text), &text, "password");
    assert_contains(
        &e,
        &["'password' is refused: passwords are never read from files"],
    );
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let text = ssh("passwd = \"x\"");
    let e = error_at(fleet(&text), &text, "passwd");
    assert_contains(
        &e,
        &["unknown key 'passwd' in [[host]]; expected one of 'name', 'kind'"],
    );
    assert!(!e.to_string().contains("'password'"), "{e}");
}

#[test]
fn ssh_host_needs_an_address() {
    let text = "[[host]]\nname = \"a\"\nkind = \"ssh\"\n";
    let e = error_at(fleet(text), text, "[[host]]");
    assert_contains(&e, &["host 'a' is kind = 'ssh' but has no address"]);
    let text = "[[host]]\nname = \"a\"\nkind = \"ssh\"\naddress = \"a b\"\n";
    let e = error_at(fleet(text), text, "address");
    assert_contains(&e, &["address = 'a b' is not a host address"]);
}

#[test]
fn port_goes_in_one_place() {
    assert_eq!(one_ssh("port = 2222").address, "box:2222");
    assert_eq!(one_ssh("").address, "box");
    let text = "[[host]]\nname = \"a\"\nkind = \"ssh\"\naddress = \"::1\"\nport = 22\n";
    let Transport::Ssh(s) = &fleet(text).unwrap().hosts[0].transport else {
        panic!("expected ssh");
    };
    assert_eq!(s.address, "[::1]:22");
    let text = "[[host]]\nname = \"a\"\nkind = \"ssh\"\naddress = \"[::1]:2200\"\n";
    assert!(fleet(text).is_ok());
    let text = "[[host]]\nname = \"a\"\nkind = \"ssh\"\naddress = \"h:22\"\nport = 22\n";
    let e = error_at(fleet(text), text, "port");
    assert_contains(
        &e,
        &["port = '22' is given, but address = 'h:22' already names a port"],
    );
    for (address, port) in [
        ("h:abc", "abc"),
        ("h:0", "0"),
        ("h:70000", "70000"),
        ("h:", ""),
    ] {
        let text = format!("[[host]]\nname = \"a\"\nkind = \"ssh\"\naddress = \"{address}\"\n");
        let e = error_at(fleet(&text), &text, "address");
        assert_contains(
            &e,
            &[&format!(
                "has the port '{port}'; expected a port from 1 to 65535"
            )],
        );
    }
    let text = ssh("port = 0");
    let e = error_at(fleet(&text), &text, "port");
    assert_contains(&e, &["host 'a': port = '0' is out of range"]);
}

#[test]
fn ssh_reconnect_window_defaults_to_30_s_and_takes_a_duration() {
    assert_eq!(
        one_ssh("").reconnect_window_secs,
        DEFAULT_RECONNECT_WINDOW_SECS
    );
    assert_eq!(DEFAULT_RECONNECT_WINDOW_SECS, 30);
    assert_eq!(
        one_ssh("reconnect_window = \"2m\"").reconnect_window_secs,
        120
    );
    let text = ssh("reconnect_window = \"x5\"");
    let e = error_at(fleet(&text), &text, "reconnect_window");
    assert_contains(&e, &["host 'a': reconnect_window = 'x5' is not a duration"]);
}

#[test]
fn ssh_paths_and_trust() {
    let s = one_ssh(
        "identity = \"keys/id\"\nknown_hosts = \"~/.ssh/kh\"\nworker_binary = \"/opt/herd\"\ntrust = \"accept-new\"\nuser = \"ml\"",
    );
    assert_eq!(s.identity, Some(PathBuf::from("conf/keys/id")));
    assert_eq!(s.known_hosts, Some(PathBuf::from("~/.ssh/kh")));
    assert_eq!(s.worker_binary, Some(PathBuf::from("/opt/herd")));
    assert_eq!(s.trust, Trust::AcceptNew);
    assert_eq!(s.user.as_deref(), Some("ml"));
    assert_eq!(one_ssh("").trust, Trust::Strict);
    let text = ssh("trust = \"yes\"");
    let e = error_at(fleet(&text), &text, "trust");
    assert_contains(
        &e,
        &["host 'a': trust = 'yes' is not a trust mode; expected 'strict' or 'accept-new'"],
    );
    let text = ssh("user = \"\"");
    let e = error_at(fleet(&text), &text, "user");
    assert_contains(&e, &["user = '' is not a user name"]);
}

#[test]
fn host_slots_device_threads_cost() {
    for (line, want) in [
        (
            "slots = 0",
            "host 'a': slots = '0' is out of range; expected an integer from 1 to 256",
        ),
        ("slots = 257", "slots = '257' is out of range"),
        (
            "device = \"cuda\"",
            "device = 'cuda' is not a device; expected 'auto', 'gpu', 'wgpu-cpu' or 'cpu'",
        ),
        ("threads = 0", "host 'a': threads = '0' is out of range"),
        (
            "cost_per_hour = -1.0",
            "cost_per_hour = '-1' is out of range; expected a number of at least 0",
        ),
        (
            "cost_per_hour = inf",
            "cost_per_hour = 'inf' is out of range",
        ),
    ] {
        let text = ssh(line);
        let e = error_at(fleet(&text), &text, line);
        assert_contains(&e, &[want]);
    }
    for (name, device) in DEVICES {
        let text = ssh(&format!("device = \"{name}\""));
        assert_eq!(fleet(&text).unwrap().hosts[0].device, *device);
    }
    let text = ssh("slots = 256\nthreads = 8\ncost_per_hour = 3");
    let h = &fleet(&text).unwrap().hosts[0];
    assert_eq!((h.slots, h.threads, h.cost_per_hour), (256, Some(8), 3.0));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn located_within(e: &Error, text: &str) {
        let lines = text.split('\n').count();
        let line = e.line.expect("a line");
        assert!(line >= 1 && line <= lines, "{e}: line {line} of {lines}");
    }

    proptest! {
        #[test]
        fn any_text_is_parsed_or_refused_with_a_location(text in "\\PC{0,200}") {
            if let Err(e) = job(&text) {
                located_within(&e, &text);
            }
            if let Err(e) = fleet(&text) {
                located_within(&e, &text);
            }
        }

        #[test]
        fn a_corrupted_job_is_parsed_or_refused_with_a_location(
            at in 0usize..TWO_TOWER.len(),
            insert in "[ -~\\n]{0,8}",
            cut in 0usize..6,
        ) {
            let mut at = at;
            while !TWO_TOWER.is_char_boundary(at) {
                at -= 1;
            }
            let end = (at + cut).min(TWO_TOWER.len());
            let text = format!("{}{insert}{}", &TWO_TOWER[..at], &TWO_TOWER[end..]);
            if let Err(e) = job(&text) {
                located_within(&e, &text);
            }
        }

        #[test]
        fn ttl_units_scale_to_seconds(n in 1u64..=36_500) {
            prop_assert_eq!(parse_ttl(&format!("{n}d")), Ok(n * 86_400));
            prop_assert_eq!(parse_ttl(&format!("{n}h")), Ok(n * 3_600));
            prop_assert_eq!(parse_ttl(&format!("{n}m")), Ok(n * 60));
            prop_assert_eq!(parse_ttl(&format!("{n}s")), Ok(n));
            prop_assert_eq!(parse_ttl(&n.to_string()), Ok(n));
        }
    }
}
