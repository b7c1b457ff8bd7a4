//! The crate's error type, and how a PKCS#11 return value is sorted into it.

use cryptoki::error::{Error as CkError, RvError};

/// What went wrong. Every message says which rule or which call failed; none holds a PIN or key
/// material (the crypto path reports only the PKCS#11 return value's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// The module, the token or a session is gone (CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT,
    /// CKR_SESSION_HANDLE_INVALID/CLOSED, CKR_DEVICE_ERROR, CKR_GENERAL_ERROR, a module that fails
    /// to load or to initialise, no token with the URI's label, no free session in time…). Retry
    /// later: the [`Token`](crate::Token) re-opens its sessions, logs in again and, when needed,
    /// re-initialises the library by itself. The service answers UNAVAILABLE and turns its health
    /// NOT_SERVING.
    #[error("PKCS#11 token unavailable: {0}")]
    Unavailable(String),
    /// [`Token::find_key`](crate::Token::find_key): the token answers but the key (or the public
    /// half of it) is not on it. (A key that vanishes after it was found is an outage:
    /// [`HsmError::Unavailable`].)
    #[error("not found: {0}")]
    NotFound(String),
    /// An object with that label (or id) already exists on the token.
    #[error("already exists: {0}")]
    Exists(String),
    /// Configuration: a bad URI, an unreadable or empty PIN source, a wrong or locked PIN, a key
    /// that the crate refuses to use (not P-256, extractable, not sensitive, not allowed to
    /// sign…), a mechanism the token lacks. Retrying does not help; a person must act.
    #[error("PKCS#11 configuration: {0}")]
    Config(String),
    /// Any other failure of the token or of this crate.
    #[error("PKCS#11 operation failed: {0}")]
    Failed(String),
}

/// How the pool must react to a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The session alone is unusable: drop it, try once more with another.
    Session,
    /// The module or the token is gone: drop every session, re-initialise the library.
    Device,
    /// The object handle is stale (the object was removed, or the library re-initialised).
    Handle,
    /// The PIN is wrong or locked: never retry a login by itself (a retry loop locks the PIN).
    Pin,
    /// The key or the token does not allow what was asked: a configuration problem.
    Refused,
    /// Anything else.
    Other,
}

pub(crate) fn classify(e: &CkError) -> Class {
    match e {
        CkError::LibraryLoading(_) | CkError::MissingSymbol(_) | CkError::NullFunctionPointer => {
            Class::Device
        }
        CkError::Pkcs11(rv, _) => classify_rv(*rv),
        _ => Class::Other,
    }
}

fn classify_rv(rv: RvError) -> Class {
    use RvError as R;
    match rv {
        // A session-level failure (or one the spec leaves vague): drop that session and try
        // once more with another; a second failure in a row is taken as the device's.
        R::SessionHandleInvalid
        | R::SessionClosed
        | R::UserNotLoggedIn
        | R::OperationActive
        | R::FunctionFailed
        | R::HostMemory
        | R::SessionCount => Class::Session,
        R::DeviceRemoved
        | R::DeviceError
        | R::DeviceMemory
        | R::TokenNotPresent
        | R::TokenNotRecognized
        | R::SlotIdInvalid
        | R::GeneralError
        | R::CryptokiNotInitialized
        | R::CantLock
        | R::MutexBad
        | R::LibraryLoadFailed => Class::Device,
        R::KeyHandleInvalid | R::ObjectHandleInvalid => Class::Handle,
        R::PinIncorrect
        | R::PinLocked
        | R::PinExpired
        | R::PinInvalid
        | R::PinLenRange
        | R::UserPinNotInitialized => Class::Pin,
        R::MechanismInvalid
        | R::MechanismParamInvalid
        | R::KeyFunctionNotPermitted
        | R::KeyTypeInconsistent
        | R::CurveNotSupported
        | R::DomainParamsInvalid
        | R::TokenWriteProtected
        | R::SessionReadOnly
        | R::ActionProhibited
        | R::FunctionNotSupported
        | R::TemplateInconsistent
        | R::TemplateIncomplete
        | R::AttributeValueInvalid
        | R::AttributeTypeInvalid => Class::Refused,
        _ => Class::Other,
    }
}

/// Sorts a cryptoki error into the public type. `what` names the operation ("sign with
/// pkcs11:…", "log in to token oxroot"); the cryptoki error contributes only the function and
/// the return value's name (or the loader's message), never data.
pub(crate) fn map(what: &str, e: &CkError) -> HsmError {
    let msg = match e {
        CkError::Pkcs11(rv, function) => format!("{what}: C_{function:?} returned {}", ckr(*rv)),
        other => format!("{what}: {other}"),
    };
    match classify(e) {
        Class::Session | Class::Device => HsmError::Unavailable(msg),
        Class::Handle => HsmError::NotFound(msg),
        Class::Pin | Class::Refused => HsmError::Config(msg),
        Class::Other => HsmError::Failed(msg),
    }
}

/// True when a PKCS#11 call failed with this return value.
pub(crate) fn is_rv(e: &CkError, rv: RvError) -> bool {
    matches!(e, CkError::Pkcs11(got, _) if *got == rv)
}

/// The spec's name of a return value: `GeneralError` → `CKR_GENERAL_ERROR`.
fn ckr(rv: RvError) -> String {
    let mut name = String::from("CKR");
    for c in format!("{rv:?}").chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    #[test]
    fn messages_name_the_call_and_the_return_value() {
        let e = CkError::Pkcs11(RvError::GeneralError, Function::GetTokenInfo);
        assert_eq!(
            map("query token 't'", &e),
            HsmError::Unavailable(
                "query token 't': C_GetTokenInfo returned CKR_GENERAL_ERROR".into()
            )
        );
        let e = CkError::Pkcs11(RvError::PinIncorrect, Function::Login);
        assert!(
            matches!(map("log in", &e), HsmError::Config(m) if m.ends_with("CKR_PIN_INCORRECT"))
        );
        assert_eq!(
            ckr(RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
    }

    #[test]
    fn classes() {
        for (rv, class) in [
            (RvError::DeviceRemoved, Class::Device),
            (RvError::TokenNotPresent, Class::Device),
            (RvError::DeviceError, Class::Device),
            (RvError::GeneralError, Class::Device),
            (RvError::CryptokiNotInitialized, Class::Device),
            (RvError::SessionHandleInvalid, Class::Session),
            (RvError::SessionClosed, Class::Session),
            (RvError::UserNotLoggedIn, Class::Session),
            (RvError::KeyHandleInvalid, Class::Handle),
            (RvError::ObjectHandleInvalid, Class::Handle),
            (RvError::PinIncorrect, Class::Pin),
            (RvError::PinLocked, Class::Pin),
            (RvError::MechanismInvalid, Class::Refused),
            (RvError::DataLenRange, Class::Other),
        ] {
            assert_eq!(
                classify(&CkError::Pkcs11(rv, Function::Sign)),
                class,
                "{rv:?}"
            );
        }
    }
}
