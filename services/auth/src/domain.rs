//! Accounts: registration, credentials, sessions and roles, as plain rules with no database or
//! clock of their own (callers pass `now`), so they can be tested as the business rules they are.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub const MIN_PASSWORD_CHARS: usize = 8;
/// Argon2 cost grows with input length; this bounds what one request can make us hash.
pub const MAX_PASSWORD_CHARS: usize = 128;
pub const MAX_NAME_CHARS: usize = 100;
/// RFC 5321's limit on a forward path.
pub const MAX_EMAIL_CHARS: usize = 254;
/// How long a retired signing key stays in the JWKS beyond the lifetime of the last token it
/// signed: clock skew, the verifiers' leeway, and a transaction that read the key just before
/// the rotation committed.
pub const KEY_RETIREMENT_GRACE: Duration = Duration::from_secs(120);

/// Field name → what is wrong with it, as the 422 answer lists them.
pub type FieldErrors = BTreeMap<String, String>;

/// A registration that passed validation; `email` and `name` are trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub email: String,
    pub password: String,
    pub name: String,
}

/// Checks every field and reports all problems at once.
pub fn validate_registration(
    email: &str,
    password: &str,
    name: &str,
) -> Result<NewAccount, FieldErrors> {
    let mut errors = FieldErrors::new();
    let email = match normalize_email(email) {
        Ok(email) => email,
        Err(problem) => {
            errors.insert("email".into(), problem.into());
            String::new()
        }
    };
    if let Err(problem) = check_password(password, &email) {
        errors.insert("password".into(), problem);
    }
    let name = name.trim();
    let name_chars = name.chars().count();
    if name_chars == 0 {
        errors.insert("name".into(), "is required".into());
    } else if name_chars > MAX_NAME_CHARS {
        errors.insert(
            "name".into(),
            format!("must be at most {MAX_NAME_CHARS} characters"),
        );
    } else if name.chars().any(char::is_control) {
        errors.insert("name".into(), "must not contain control characters".into());
    }
    if errors.is_empty() {
        Ok(NewAccount {
            email,
            password: password.to_owned(),
            name: name.to_owned(),
        })
    } else {
        Err(errors)
    }
}

/// Login needs both fields; their content is judged by the password check alone, so a
/// malformed e-mail address gets the same 401 as a wrong password. Only what no account can
/// have is refused up front: control characters (PostgreSQL refuses NUL in text) and addresses
/// longer than any registration allows.
pub fn validate_login(email: &str, password: &str) -> Result<String, FieldErrors> {
    let mut errors = FieldErrors::new();
    let email = email.trim();
    if email.is_empty() {
        errors.insert("email".into(), "is required".into());
    } else if email.chars().any(char::is_control) {
        errors.insert("email".into(), "must not contain control characters".into());
    } else if email.chars().count() > MAX_EMAIL_CHARS {
        errors.insert("email".into(), "is too long".into());
    }
    if password.is_empty() {
        errors.insert("password".into(), "is required".into());
    }
    if errors.is_empty() {
        Ok(email.to_owned())
    } else {
        Err(errors)
    }
}

/// Trims the address and checks its shape. Case is kept as typed; uniqueness and lookups
/// ignore case (the database indexes `lower(email)`).
pub fn normalize_email(raw: &str) -> Result<String, &'static str> {
    let email = raw.trim();
    if email.is_empty() {
        return Err("is required");
    }
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err("is too long");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces");
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err("must be an e-mail address");
    };
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if local.is_empty() || local.contains('@') || local.len() > 64 || !domain_ok {
        return Err("must be an e-mail address");
    }
    Ok(email.to_owned())
}

fn check_password(password: &str, email: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
    }
    if password.trim().is_empty() {
        return Err("must not be only spaces".into());
    }
    if !email.is_empty() && password.eq_ignore_ascii_case(email) {
        return Err("must not be the e-mail address".into());
    }
    Ok(())
}

/// Roles of a self-registered account.
pub fn customer_roles() -> Vec<String> {
    vec![auth_kit::roles::CUSTOMER.to_owned()]
}

/// Roles of an account made with `create-admin`.
pub fn admin_roles() -> Vec<String> {
    vec![
        auth_kit::roles::CUSTOMER.to_owned(),
        auth_kit::roles::ADMIN.to_owned(),
    ]
}

/// The event other services learn about a new account from.
pub fn user_registered(
    user_id: Uuid,
    account: &NewAccount,
    at: DateTime<Utc>,
) -> events::UserRegistered {
    events::UserRegistered {
        user_id: user_id.to_string(),
        email: account.email.clone(),
        display_name: account.name.clone(),
        registered_at: at.timestamp_millis(),
    }
}

/// A fixed-window counter as stored: when its window began and how many events it has seen,
/// including the one being judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleWindow {
    pub started_at: DateTime<Utc>,
    pub count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    Allowed,
    /// Too many; the caller may try again after this many seconds.
    Limited {
        retry_after_secs: u64,
    },
}

/// Whether the `window.count`-th event of its window is within `limit`.
pub fn throttle(
    window: ThrottleWindow,
    limit: u32,
    length: Duration,
    now: DateTime<Utc>,
) -> Throttle {
    let length = chrono::Duration::from_std(length).unwrap_or(chrono::Duration::MAX);
    let ends_at = window.started_at.checked_add_signed(length);
    let remaining = match ends_at {
        Some(ends_at) if ends_at > now => ends_at - now,
        // The window is over: the next event starts a new one.
        _ => return Throttle::Allowed,
    };
    if window.count <= limit {
        return Throttle::Allowed;
    }
    let millis = u64::try_from(remaining.num_milliseconds()).unwrap_or(0);
    Throttle::Limited {
        retry_after_secs: millis.div_ceil(1000).max(1),
    }
}

/// What is known about a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshTokenState {
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshDecision {
    /// Valid: mark it used and issue its successor in the same family.
    Rotate,
    /// Already exchanged once: someone holds a copy. Revoke the whole family, so the thief's
    /// successor token dies along with the victim's.
    Reused,
    Revoked,
    Expired,
}

pub fn decide_refresh(token: RefreshTokenState, now: DateTime<Utc>) -> RefreshDecision {
    if token.revoked_at.is_some() {
        RefreshDecision::Revoked
    } else if token.used_at.is_some() {
        RefreshDecision::Reused
    } else if token.expires_at <= now {
        RefreshDecision::Expired
    } else {
        RefreshDecision::Rotate
    }
}

/// When a refresh token issued at `now` expires: `ttl` later, but never after the absolute
/// deadline of its session (`session_deadline`, fixed at login).
pub fn refresh_token_expiry(
    now: DateTime<Utc>,
    ttl: Duration,
    session_deadline: DateTime<Utc>,
) -> DateTime<Utc> {
    let sliding = chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    sliding.min(session_deadline)
}

/// The absolute deadline of a session started at `now`.
pub fn session_deadline(now: DateTime<Utc>, absolute_ttl: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(absolute_ttl)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// When a key retired at `retired_at` may leave the JWKS: after every token it signed expired.
pub fn key_publish_until(retired_at: DateTime<Utc>, access_ttl: Duration) -> DateTime<Utc> {
    let keep = access_ttl.saturating_add(KEY_RETIREMENT_GRACE);
    retired_at + chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid time")
    }

    #[test]
    fn a_good_registration_is_trimmed_and_accepted() {
        let account =
            validate_registration("  Ada@Example.com ", "correct horse", " Ada ").expect("valid");
        assert_eq!(account.email, "Ada@Example.com");
        assert_eq!(account.name, "Ada");
        assert_eq!(account.password, "correct horse");
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let errors = validate_registration("nope", "short", "").expect_err("invalid");
        assert_eq!(
            errors.keys().map(String::as_str).collect::<Vec<_>>(),
            ["email", "name", "password"]
        );
    }

    #[test]
    fn email_shapes() {
        for good in [
            "a@b.co",
            "first.last+tag@sub.example.org",
            "üser@exämple.de",
        ] {
            assert!(normalize_email(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "   ",
            "plain",
            "@example.com",
            "a@",
            "a@localhost",
            "a@b..com",
            "a@-b.com",
            "a b@example.com",
            "a@b@example.com",
            "a@exa_mple.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} must be refused");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(normalize_email(&long).is_err());
    }

    #[test]
    fn password_rules() {
        let check = |password: &str| validate_registration("a@b.co", password, "A");
        assert!(check("1234567").is_err());
        assert!(check("12345678").is_ok());
        assert!(check(&"x".repeat(MAX_PASSWORD_CHARS)).is_ok());
        assert!(check(&"x".repeat(MAX_PASSWORD_CHARS + 1)).is_err());
        assert!(check("        ").is_err());
        assert!(validate_registration("ada@example.com", "ADA@example.com", "A").is_err());
        // Characters, not bytes: eight multi-byte characters are enough.
        assert!(check("ééééééé").is_err());
        assert!(check("éééééééé").is_ok());
    }

    #[test]
    fn names_must_be_present_short_and_printable() {
        let check = |name: &str| validate_registration("a@b.co", "long enough", name);
        assert!(check("   ").is_err());
        assert!(check(&"n".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(check(&"n".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(check("bad\u{0}name").is_err());
    }

    #[test]
    fn login_only_needs_both_fields() {
        assert_eq!(validate_login(" x ", "y"), Ok("x".into()));
        let errors = validate_login("", "").expect_err("both missing");
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn login_refuses_what_no_account_can_have() {
        assert!(validate_login("a\u{0}@b.co", "y").is_err());
        assert!(validate_login("a\u{1b}@b.co", "y").is_err());
        assert!(validate_login(&format!("{}@b.co", "a".repeat(300)), "y").is_err());
        // A password may hold anything: it only ever reaches argon2.
        assert!(validate_login("a@b.co", "pass\u{0}word").is_ok());
    }

    #[test]
    fn a_registration_becomes_a_user_registered_event() {
        let id = Uuid::now_v7();
        let account = validate_registration("a@b.co", "long enough", "A").expect("valid");
        let event = user_registered(id, &account, at(0));
        assert_eq!(event.user_id, id.to_string());
        assert_eq!(event.email, "a@b.co");
        assert_eq!(event.display_name, "A");
        assert_eq!(event.registered_at, at(0).timestamp_millis());
    }

    #[test]
    fn roles() {
        assert_eq!(customer_roles(), ["customer"]);
        assert!(admin_roles().iter().any(|role| role == "admin"));
    }

    #[test]
    fn throttling_allows_up_to_the_limit_within_a_window() {
        let window = Duration::from_secs(60);
        let counted = |count| ThrottleWindow {
            started_at: at(0),
            count,
        };
        assert_eq!(throttle(counted(1), 3, window, at(1)), Throttle::Allowed);
        assert_eq!(throttle(counted(3), 3, window, at(1)), Throttle::Allowed);
        assert_eq!(
            throttle(counted(4), 3, window, at(10)),
            Throttle::Limited {
                retry_after_secs: 50
            }
        );
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        let window = ThrottleWindow {
            started_at: at(0),
            count: 9,
        };
        let almost_over = at(0) + chrono::Duration::milliseconds(59_900);
        assert_eq!(
            throttle(window, 3, Duration::from_secs(60), almost_over),
            Throttle::Limited {
                retry_after_secs: 1
            }
        );
    }

    #[test]
    fn an_expired_window_never_limits() {
        let window = ThrottleWindow {
            started_at: at(0),
            count: 1000,
        };
        assert_eq!(
            throttle(window, 3, Duration::from_secs(60), at(60)),
            Throttle::Allowed
        );
    }

    fn refresh_token(expires_in: i64) -> RefreshTokenState {
        RefreshTokenState {
            expires_at: at(expires_in),
            used_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn a_fresh_refresh_token_rotates() {
        assert_eq!(
            decide_refresh(refresh_token(100), at(0)),
            RefreshDecision::Rotate
        );
    }

    #[test]
    fn a_used_refresh_token_is_reuse() {
        let token = RefreshTokenState {
            used_at: Some(at(-5)),
            ..refresh_token(100)
        };
        assert_eq!(decide_refresh(token, at(0)), RefreshDecision::Reused);
    }

    #[test]
    fn revocation_wins_over_reuse_and_expiry() {
        let token = RefreshTokenState {
            used_at: Some(at(-5)),
            revoked_at: Some(at(-1)),
            ..refresh_token(-10)
        };
        assert_eq!(decide_refresh(token, at(0)), RefreshDecision::Revoked);
    }

    #[test]
    fn an_expired_refresh_token_is_refused() {
        assert_eq!(
            decide_refresh(refresh_token(0), at(0)),
            RefreshDecision::Expired
        );
    }

    #[test]
    fn a_refresh_token_never_outlives_its_session() {
        let hour = Duration::from_secs(3600);
        let deadline = session_deadline(at(0), Duration::from_secs(3 * 3600));
        assert_eq!(deadline, at(3 * 3600));
        assert_eq!(refresh_token_expiry(at(0), hour, deadline), at(3600));
        assert_eq!(
            refresh_token_expiry(at(2 * 3600 + 1800), hour, deadline),
            deadline,
            "the last refresh is cut at the deadline"
        );
        assert_eq!(
            refresh_token_expiry(at(0), Duration::MAX, deadline),
            deadline
        );
    }

    #[test]
    fn a_retired_key_outlives_the_tokens_it_signed() {
        let ttl = Duration::from_secs(900);
        let until = key_publish_until(at(0), ttl);
        assert!(until > at(900));
        assert_eq!(until, at(900) + chrono::Duration::seconds(120));
    }
}
