//! The control plane's gate: an optional admin token that every `/_mock/*` request must then
//! present as `Authorization: Bearer TOKEN`, compared as a blake3 digest in constant time (as
//! the proxy compares its client keys), and how much of the keys a caller may see.
//!
//! Without a token the control plane stays open, as tests and the harness expect; the Rust
//! handle ([`crate::MockProvider`]) reads the state directly and never needs one.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::Response;

use crate::admin_token::AdminToken;
use crate::error::MockError;
use crate::request::bearer_token;
use crate::spec::Dialect;
use crate::state::MockState;

/// The control plane speaks Groq's error shape whatever the API's dialect.
pub const CONTROL_DIALECT: Dialect = Dialect::Groq;

/// A `/_mock/*` request that passed the gate; extracting it is the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admin {
    /// An admin token is configured and this request gave it.
    pub authenticated: bool,
}

/// Lets a request through when no token is configured, or when it gives the token.
pub fn check(token: Option<&AdminToken>, presented: Option<&str>) -> Result<Admin, MockError> {
    match token {
        None => Ok(Admin {
            authenticated: false,
        }),
        Some(token) if presented.is_some_and(|p| token.matches(p)) => Ok(Admin {
            authenticated: true,
        }),
        Some(_) => Err(MockError::AdminTokenRequired),
    }
}

/// How much of the keys a control-plane answer shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyView {
    /// Masked (see [`crate::mask`]): the default.
    Masked,
    /// Whole: `?keys=full`, only for a caller that gave the configured admin token.
    Full,
}

/// The view a `?keys=` value asks for, if `admin` may have it: `full` needs an admin token to
/// be configured (and given, which passing the gate proves); anything but `masked` or `full`
/// is a 400.
pub fn key_view(requested: Option<&str>, admin: Admin) -> Result<KeyView, MockError> {
    match requested {
        None | Some("masked") => Ok(KeyView::Masked),
        Some("full") if admin.authenticated => Ok(KeyView::Full),
        Some("full") => Err(MockError::FullKeysNeedAdminToken),
        Some(other) => Err(MockError::invalid(
            "keys",
            format!("'keys' : value must be \"masked\" or \"full\" (got {other:?})"),
        )),
    }
}

impl FromRequestParts<Arc<MockState>> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<MockState>,
    ) -> Result<Self, Self::Rejection> {
        check(
            state.spec.admin_token.as_ref(),
            bearer_token(&parts.headers),
        )
        .map_err(|e| e.into_response_in(CONTROL_DIALECT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_the_control_plane_is_open() {
        assert_eq!(
            check(None, None),
            Ok(Admin {
                authenticated: false
            })
        );
        assert_eq!(
            check(None, Some("anything")),
            Ok(Admin {
                authenticated: false
            })
        );
    }

    #[test]
    fn with_a_token_only_that_token_passes() {
        let token = AdminToken::new("s3cret");
        assert_eq!(
            check(Some(&token), Some("s3cret")),
            Ok(Admin {
                authenticated: true
            })
        );
        for wrong in [
            None,
            Some(""),
            Some("s3cre"),
            Some("s3cret2"),
            Some("S3CRET"),
        ] {
            assert_eq!(
                check(Some(&token), wrong),
                Err(MockError::AdminTokenRequired),
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn whole_keys_need_a_configured_and_given_admin_token() {
        let open = Admin {
            authenticated: false,
        };
        let admin = Admin {
            authenticated: true,
        };
        assert_eq!(key_view(None, open), Ok(KeyView::Masked));
        assert_eq!(key_view(Some("masked"), admin), Ok(KeyView::Masked));
        assert_eq!(
            key_view(None, admin),
            Ok(KeyView::Masked),
            "masked by default"
        );
        assert_eq!(key_view(Some("full"), admin), Ok(KeyView::Full));
        assert_eq!(
            key_view(Some("full"), open),
            Err(MockError::FullKeysNeedAdminToken)
        );
        assert!(matches!(
            key_view(Some("FULL"), admin),
            Err(MockError::InvalidRequest { param: Some(p), .. }) if p == "keys"
        ));
    }

    #[test]
    fn the_token_never_prints() {
        let token = AdminToken::new("s3cret");
        assert_eq!(format!("{token:?}"), "AdminToken(***)");
        assert!(AdminToken::new("  ").is_empty());
    }
}
