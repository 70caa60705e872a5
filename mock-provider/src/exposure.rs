//! Whether a mock can be reached from beyond this machine, and the warning it logs at start
//! when it can: its keys are fixed and public, and without an admin token its control plane is
//! open to whoever reaches it.

use std::net::SocketAddr;

/// The warning to log when a mock listens on `addr`, or `None` on a loopback address.
pub fn exposure_warning(addr: SocketAddr, admin_token_set: bool) -> Option<String> {
    if addr.ip().to_canonical().is_loopback() {
        return None;
    }
    let mut warning = format!(
        "spillway-mock is listening on {addr}, beyond loopback: it accepts its fixed API keys \
         from anyone who can reach it. It is meant for tests and CI, not for exposure to a network."
    );
    if !admin_token_set {
        warning.push_str(
            " Its control plane (/_mock/*) is open too: anyone who can reach it can read its \
             stats and journal, reset it and inject faults. Set an admin token \
             (--admin-token-env NAME, or admin_token = \"env:NAME\").",
        );
    }
    Some(warning)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("a socket address")
    }

    #[test]
    fn loopback_addresses_get_no_warning() {
        for a in [
            "127.0.0.1:8090",
            "127.1.2.3:0",
            "[::1]:8090",
            "[::ffff:127.0.0.1]:80",
        ] {
            for token in [false, true] {
                assert_eq!(exposure_warning(addr(a), token), None, "{a}");
            }
        }
    }

    #[test]
    fn any_other_address_warns_about_the_fixed_keys() {
        for a in [
            "0.0.0.0:8090",
            "[::]:8090",
            "192.168.1.10:8090",
            "[2001:db8::1]:1",
        ] {
            let warning = exposure_warning(addr(a), true).expect("a warning");
            assert!(warning.contains("fixed API keys"), "{warning}");
            assert!(warning.contains("tests and CI"), "{warning}");
            assert!(
                !warning.contains("/_mock"),
                "the control plane is guarded: {warning}"
            );
        }
    }

    #[test]
    fn without_an_admin_token_it_also_says_the_control_plane_is_open() {
        let warning = exposure_warning(addr("0.0.0.0:8090"), false).expect("a warning");
        assert!(warning.contains("/_mock/*) is open"), "{warning}");
        assert!(warning.contains("--admin-token-env"), "{warning}");
    }
}
