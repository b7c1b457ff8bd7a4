//! A CA key held by the token: generated there, or found there, and used only through it.

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, PoisonError};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use sha2::{Digest as _, Sha256};

use crate::der;
use crate::token::{Lease, Step, ck};
use crate::uri::check_label;
use crate::{HsmError, Pkcs11Uri, Token};

/// The message signed (and verified in software against the public key object) when a key is
/// found or generated: a pairwise consistency check that the public key object belongs to the
/// private key, before any certificate is issued with it.
const CONSISTENCY_MESSAGE: &[u8] = b"oxroot-hsm: pairwise consistency check";

/// The protection attributes of a private key, as the token reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[allow(clippy::struct_excessive_bools)] // They are PKCS#11's booleans, one for one.
pub struct KeyProtection {
    /// CKA_TOKEN: stored in the token (not a session object).
    pub token: bool,
    /// CKA_PRIVATE: usable only after login.
    pub private: bool,
    /// CKA_SENSITIVE: its value cannot be read out in plaintext.
    pub sensitive: bool,
    /// CKA_ALWAYS_SENSITIVE: it has been sensitive since it was made.
    pub always_sensitive: bool,
    /// CKA_EXTRACTABLE: it could be wrapped out of the token.
    pub extractable: bool,
    /// CKA_NEVER_EXTRACTABLE: it has never been extractable.
    pub never_extractable: bool,
    /// CKA_LOCAL: generated inside the token (not imported).
    pub local: bool,
    /// CKA_SIGN: allowed to sign.
    pub sign: bool,
}

/// A P-256 CA private key in a token. `Send + Sync + Clone`; holds its [`Token`].
///
/// Nothing of the private key ever leaves the token: this type holds its URI, its public key and
/// (per library incarnation) its object handle.
#[derive(Clone)]
pub struct CaKey {
    inner: Arc<KeyInner>,
}

struct KeyInner {
    token: Arc<Token>,
    uri: Pkcs11Uri,
    label: Option<Vec<u8>>,
    id: Option<Vec<u8>>,
    public: [u8; 65],
    /// The private key's object handle and the library epoch it belongs to.
    handle: Mutex<Option<(u64, ObjectHandle)>>,
}

impl fmt::Debug for CaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaKey")
            .field("uri", &self.inner.uri.to_string())
            .finish_non_exhaustive()
    }
}

fn bool_attr(attrs: &[Attribute], which: AttributeType) -> Option<bool> {
    attrs.iter().find_map(|a| match (a, which) {
        (Attribute::Token(v), AttributeType::Token)
        | (Attribute::Private(v), AttributeType::Private)
        | (Attribute::Sensitive(v), AttributeType::Sensitive)
        | (Attribute::AlwaysSensitive(v), AttributeType::AlwaysSensitive)
        | (Attribute::Extractable(v), AttributeType::Extractable)
        | (Attribute::NeverExtractable(v), AttributeType::NeverExtractable)
        | (Attribute::Local(v), AttributeType::Local)
        | (Attribute::Sign(v), AttributeType::Sign)
        | (Attribute::AlwaysAuthenticate(v), AttributeType::AlwaysAuthenticate) => Some(*v),
        _ => None,
    })
}

fn bytes_attr(attrs: &[Attribute], which: AttributeType) -> Option<&[u8]> {
    attrs.iter().find_map(|a| match (a, which) {
        (Attribute::Label(v), AttributeType::Label)
        | (Attribute::Id(v), AttributeType::Id)
        | (Attribute::EcParams(v), AttributeType::EcParams)
        | (Attribute::EcPoint(v), AttributeType::EcPoint) => Some(v.as_slice()),
        _ => None,
    })
}

fn key_type(attrs: &[Attribute]) -> Option<KeyType> {
    attrs.iter().find_map(|a| match a {
        Attribute::KeyType(k) => Some(*k),
        _ => None,
    })
}

/// The template that finds the private key by label and/or id.
fn private_template(label: Option<&[u8]>, id: Option<&[u8]>) -> Vec<Attribute> {
    let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    if let Some(label) = label {
        template.push(Attribute::Label(label.to_vec()));
    }
    if let Some(id) = id {
        template.push(Attribute::Id(id.to_vec()));
    }
    template
}

fn describe(label: Option<&[u8]>, id: Option<&[u8]>) -> String {
    let mut parts = Vec::new();
    if let Some(label) = label {
        parts.push(format!("label '{}'", String::from_utf8_lossy(label)));
    }
    if let Some(id) = id {
        let hex = id.iter().fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
        parts.push(format!("id {hex}"));
    }
    parts.join(" and ")
}

const PROTECTION: [AttributeType; 8] = [
    AttributeType::Token,
    AttributeType::Private,
    AttributeType::Sensitive,
    AttributeType::AlwaysSensitive,
    AttributeType::Extractable,
    AttributeType::NeverExtractable,
    AttributeType::Local,
    AttributeType::Sign,
];

fn protection(attrs: &[Attribute]) -> Result<KeyProtection, HsmError> {
    let get = |t: AttributeType| {
        bool_attr(attrs, t).ok_or_else(|| {
            HsmError::Failed(format!("the token did not report {t} of the private key"))
        })
    };
    Ok(KeyProtection {
        token: get(AttributeType::Token)?,
        private: get(AttributeType::Private)?,
        sensitive: get(AttributeType::Sensitive)?,
        always_sensitive: get(AttributeType::AlwaysSensitive)?,
        extractable: get(AttributeType::Extractable)?,
        never_extractable: get(AttributeType::NeverExtractable)?,
        local: get(AttributeType::Local)?,
        sign: get(AttributeType::Sign)?,
    })
}

/// ECDSA over a SHA-256 digest with CKM_ECDSA: r ‖ s.
fn raw_sign(session: &Session, key: ObjectHandle, digest: &[u8]) -> Result<Vec<u8>, Step> {
    session
        .sign(&Mechanism::Ecdsa, key, digest)
        .map_err(ck("sign (CKM_ECDSA)"))
}

impl Token {
    /// Generates an EC P-256 key pair inside the token: the private key with CKA_TOKEN,
    /// CKA_PRIVATE, CKA_SENSITIVE true, CKA_EXTRACTABLE false, CKA_SIGN true (and CKA_DERIVE
    /// false); the public key with CKA_TOKEN true, CKA_VERIFY true. Both get `label` and, when
    /// not empty, `id` as CKA_ID. Refuses ([`HsmError::Exists`]) if an object with that label, or
    /// that id, is already on the token (checked within this process under a lock; two processes
    /// generating the same label at once are not guarded against).
    ///
    /// The key's URI is [`Pkcs11Uri::key_uri`] of the token's; store that, never a handle.
    ///
    /// # Errors
    ///
    /// [`HsmError::Exists`] as above; [`HsmError::Config`] for an empty label, an id over 255
    /// bytes, a token without EC P-256 key generation; [`HsmError::Unavailable`] when the token
    /// is gone (the key pair may or may not have been made: [`Token::find_key`] tells).
    pub fn generate_key(self: &Arc<Self>, label: &str, id: &[u8]) -> Result<CaKey, HsmError> {
        check_label(label)?;
        if id.len() > 255 {
            return Err(HsmError::Config(
                "a key id must be at most 255 bytes".into(),
            ));
        }
        let uri = self.uri().key_uri(label, id)?;
        let _one_at_a_time = self
            .generate_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let label_bytes = label.as_bytes().to_vec();
        let (epoch, public, private) = self.run(|lease| {
            let session = lease.session();
            let by_label = session
                .find_objects(&[Attribute::Label(label_bytes.clone())])
                .map_err(ck("look for objects with the label"))?;
            if !by_label.is_empty() {
                return Err(Step::Hsm(HsmError::Exists(format!(
                    "an object labelled '{label}' is already on token '{}'",
                    self.uri().token()
                ))));
            }
            if !id.is_empty() {
                let by_id = session
                    .find_objects(&[Attribute::Id(id.to_vec())])
                    .map_err(ck("look for objects with the id"))?;
                if !by_id.is_empty() {
                    return Err(Step::Hsm(HsmError::Exists(format!(
                        "an object with {} is already on token '{}'",
                        describe(None, Some(id)),
                        self.uri().token()
                    ))));
                }
            }
            let mut common = vec![
                Attribute::Token(true),
                Attribute::Label(label_bytes.clone()),
            ];
            if !id.is_empty() {
                common.push(Attribute::Id(id.to_vec()));
            }
            let mut public = common.clone();
            public.extend([
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(der::P256_PARAMS.to_vec()),
                Attribute::Private(false),
                Attribute::Verify(true),
            ]);
            let mut private = common;
            private.extend([
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Derive(false),
            ]);
            let (public, private) = session
                .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
                .map_err(ck("generate an EC P-256 key pair (CKM_EC_KEY_PAIR_GEN)"))?;
            Ok((lease.epoch(), public, private))
        })?;
        match CaKey::load(self, &uri) {
            Ok(key) => Ok(key),
            Err(e) => {
                // A key pair that fails its checks is not left behind (best effort: if the token
                // went away meanwhile, the handles are gone with it).
                if !matches!(e, HsmError::Unavailable(_)) {
                    let _ = self.run(|lease| {
                        if lease.epoch() == epoch {
                            let session = lease.session();
                            let _ = session.destroy_object(private);
                            let _ = session.destroy_object(public);
                        }
                        Ok(())
                    });
                }
                Err(e)
            }
        }
    }

    /// A key an HSM officer made beforehand (or one generated earlier), by the URI's object
    /// label and/or id. The URI must name this token (same module path and token attributes).
    ///
    /// Refused ([`HsmError::Config`]): a key that is not EC P-256, not allowed to sign,
    /// extractable or not sensitive, or that needs a login per use (CKA_ALWAYS_AUTHENTICATE); an
    /// ambiguous URI (several keys match); a public key object that does not match the private
    /// key (a test signature does not verify). [`HsmError::NotFound`]: no such private key, or no
    /// public key object beside it (same id, or same label when the key has no id).
    ///
    /// # Errors
    ///
    /// As above, and [`HsmError::Unavailable`] when the token is gone.
    pub fn find_key(self: &Arc<Self>, uri: &Pkcs11Uri) -> Result<CaKey, HsmError> {
        let mine = self.uri();
        if uri.module_path() != mine.module_path()
            || uri.token() != mine.token()
            || uri.serial() != mine.serial()
            || uri.manufacturer() != mine.manufacturer()
            || uri.model() != mine.model()
        {
            return Err(HsmError::Config(format!(
                "{uri} names another token than {mine}"
            )));
        }
        if uri.object().is_none() && uri.id().is_none() {
            return Err(HsmError::Config(format!(
                "{uri} names no key: give object= (its label) and/or id="
            )));
        }
        CaKey::load(self, uri)
    }
}

impl CaKey {
    fn load(token: &Arc<Token>, uri: &Pkcs11Uri) -> Result<CaKey, HsmError> {
        let want_label = uri.object().map(|l| l.as_bytes().to_vec());
        let want_id = uri.id().map(<[u8]>::to_vec);
        let (label, id, public, epoch, handle) = token.run(|lease| {
            lease.ensure_logged_in()?;
            let session = lease.session();
            let what = describe(want_label.as_deref(), want_id.as_deref());
            let found = session
                .find_objects(&private_template(want_label.as_deref(), want_id.as_deref()))
                .map_err(ck("find the private key"))?;
            let handle = match found.as_slice() {
                [one] => *one,
                [] => {
                    return Err(Step::Hsm(HsmError::NotFound(format!(
                        "no private key with {what} on token '{}'",
                        uri.token()
                    ))));
                }
                many => {
                    return Err(Step::Hsm(HsmError::Config(format!(
                        "{} private keys with {what} on token '{}': the URI must name one",
                        many.len(),
                        uri.token()
                    ))));
                }
            };
            let mut wanted = vec![
                AttributeType::KeyType,
                AttributeType::Label,
                AttributeType::Id,
                AttributeType::EcParams,
                AttributeType::AlwaysAuthenticate,
            ];
            wanted.extend(PROTECTION);
            let attrs = session
                .get_attributes(handle, &wanted)
                .map_err(ck("read the private key's attributes"))?;
            check_private(&attrs, &what)?;
            let label = bytes_attr(&attrs, AttributeType::Label)
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec);
            let id = bytes_attr(&attrs, AttributeType::Id)
                .filter(|i| !i.is_empty())
                .map(<[u8]>::to_vec);

            let public = find_public(session, id.as_deref(), label.as_deref(), &what)?;
            consistency(session, handle, &public, &what)?;
            Ok((label, id, public, lease.epoch(), handle))
        })?;
        let uri = match label.as_deref().map(std::str::from_utf8) {
            Some(Ok(text)) => token
                .uri()
                .key_uri(text, id.as_deref().unwrap_or_default())?,
            _ => uri.clone(),
        };
        Ok(CaKey {
            inner: Arc::new(KeyInner {
                token: Arc::clone(token),
                uri,
                label,
                id,
                public,
                handle: Mutex::new(Some((epoch, handle))),
            }),
        })
    }

    /// The key's URI: the token's, with `object=` its label, `id=` its CKA_ID (when it has
    /// them) and `type=private`. This is what a configuration file records.
    #[must_use]
    pub fn uri(&self) -> &Pkcs11Uri {
        &self.inner.uri
    }

    /// The token the key is on.
    #[must_use]
    pub fn token(&self) -> &Arc<Token> {
        &self.inner.token
    }

    /// SEC1 uncompressed public point (65 bytes), read from the token's public key object
    /// (CKA_EC_POINT) when the key was found or generated.
    #[must_use]
    pub fn public_key(&self) -> &[u8; 65] {
        &self.inner.public
    }

    /// ECDSA P-256 with SHA-256 over `message`, DER-encoded (X9.62 Ecdsa-Sig-Value), as X.509
    /// wants it.
    ///
    /// SHA-256 runs here, in software, and the token signs the 32-byte digest with CKM_ECDSA:
    /// every EC token has CKM_ECDSA while CKM_ECDSA_SHA256 is missing on several (smart cards,
    /// some network HSMs' partitions), and only 32 bytes cross to the token however large the
    /// certificate or CRL. Hashing public data outside the token costs no security.
    ///
    /// Blocks for the token's calls: about 0.1 ms on SoftHSM on a 2-core machine (C_SignInit and
    /// C_Sign, twice: cryptoki asks for the length first); a network round trip or more on a
    /// network HSM. After a re-initialisation, the first call also finds the key again and
    /// checks it is the same one (its public key, and a test signature).
    ///
    /// # Errors
    ///
    /// [`HsmError::Unavailable`] when the token is gone, or no longer shows the key (deleted,
    /// or the library lost track of it: the next attempt after the retry interval re-initialises
    /// the library and looks again), or no session is free in time: retry later.
    /// [`HsmError::Failed`] for anything else the token refuses.
    pub fn sign_sha256(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let digest = Sha256::digest(message);
        let raw = self.with_handle(|lease, handle| raw_sign(lease.session(), handle, &digest))?;
        der::ecdsa_sig(&raw).ok_or_else(|| {
            HsmError::Failed(format!(
                "the token returned a {}-byte ECDSA signature; P-256 needs 64",
                raw.len()
            ))
        })
    }

    /// A cheap check that the token answers and the key is there (for health): the token's
    /// info and one attribute of the key. Reconnects first if the token had gone away.
    ///
    /// # Errors
    ///
    /// As [`CaKey::sign_sha256`].
    pub fn probe(&self) -> Result<(), HsmError> {
        self.with_handle(|lease, handle| {
            lease.check_token()?;
            lease
                .session()
                .get_attributes(handle, &[AttributeType::Class])
                .map_err(ck("read the key's class"))?;
            Ok(())
        })
    }

    /// The private key's protection attributes, read from the token now.
    ///
    /// # Errors
    ///
    /// As [`CaKey::sign_sha256`].
    pub fn protection(&self) -> Result<KeyProtection, HsmError> {
        let attrs = self.with_handle(|lease, handle| {
            lease
                .session()
                .get_attributes(handle, &PROTECTION)
                .map_err(ck("read the private key's attributes"))
        })?;
        protection(&attrs)
    }

    /// Runs `op` with the private key's handle for the lease's library incarnation, finding
    /// the key again (by label and id) after a re-initialisation or a stale handle.
    fn with_handle<T>(
        &self,
        mut op: impl FnMut(&mut Lease<'_>, ObjectHandle) -> Result<T, Step>,
    ) -> Result<T, HsmError> {
        let inner = &*self.inner;
        inner.token.run(|lease| {
            let cached = *inner.handle.lock().unwrap_or_else(PoisonError::into_inner);
            let handle = match cached {
                Some((epoch, handle)) if epoch == lease.epoch() => handle,
                _ => {
                    lease.ensure_logged_in()?;
                    let found = lease
                        .session()
                        .find_objects(&private_template(
                            inner.label.as_deref(),
                            inner.id.as_deref(),
                        ))
                        .map_err(ck("find the private key again"))?;
                    let [handle] = found.as_slice() else {
                        // The key was there when this CaKey was made. A token that no longer
                        // shows it is, for a CA, an outage (and may be a library instance that
                        // lost track of its files, as SoftHSM's does when they go away and
                        // come back): Unavailable, and the next attempt re-initialises the
                        // library and looks again.
                        let err = HsmError::Unavailable(format!(
                            "{} private keys with {} on token '{}' (expected one: was it deleted?)",
                            found.len(),
                            describe(inner.label.as_deref(), inner.id.as_deref()),
                            inner.uri.token()
                        ));
                        lease.fail(&err);
                        return Err(Step::Hsm(err));
                    };
                    // The same key, not another one put under its label and id since: its
                    // public key is the one certificates were issued for, and the private key
                    // still pairs with it.
                    let what = describe(inner.label.as_deref(), inner.id.as_deref());
                    let public = find_public(
                        lease.session(),
                        inner.id.as_deref(),
                        inner.label.as_deref(),
                        &what,
                    )?;
                    if public != inner.public {
                        return Err(Step::Hsm(HsmError::Config(format!(
                            "the key with {what} on token '{}' is not the one found before (its public key changed): refusing to sign with it",
                            inner.uri.token()
                        ))));
                    }
                    consistency(lease.session(), *handle, &public, &what)?;
                    *inner.handle.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some((lease.epoch(), *handle));
                    *handle
                }
            };
            let result = op(lease, handle);
            if let Err(Step::Ck(_, e)) = &result
                && crate::error::classify(e) == crate::error::Class::Handle
            {
                *inner.handle.lock().unwrap_or_else(PoisonError::into_inner) = None;
            }
            result
        })
    }
}

/// The public key object beside a private key (same CKA_ID, or same CKA_LABEL when the key has
/// no id): its uncompressed P-256 point.
fn find_public(
    session: &Session,
    id: Option<&[u8]>,
    label: Option<&[u8]>,
    what: &str,
) -> Result<[u8; 65], Step> {
    let mut template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
    match (id, label) {
        (Some(id), _) => template.push(Attribute::Id(id.to_vec())),
        (None, Some(label)) => template.push(Attribute::Label(label.to_vec())),
        (None, None) => {
            return Err(Step::Hsm(HsmError::Config(format!(
                "the private key with {what} has neither CKA_ID nor CKA_LABEL: its public key cannot be found"
            ))));
        }
    }
    let found = session
        .find_objects(&template)
        .map_err(ck("find the public key"))?;
    let public_handle = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(Step::Hsm(HsmError::NotFound(format!(
                "no public key object beside the private key with {what}"
            ))));
        }
        many => {
            return Err(Step::Hsm(HsmError::Config(format!(
                "{} public key objects match the private key with {what}",
                many.len()
            ))));
        }
    };
    let attrs = session
        .get_attributes(
            public_handle,
            &[AttributeType::EcParams, AttributeType::EcPoint],
        )
        .map_err(ck("read the public key"))?;
    if bytes_attr(&attrs, AttributeType::EcParams) != Some(der::P256_PARAMS) {
        return Err(Step::Hsm(HsmError::Config(format!(
            "the public key beside the key with {what} is not on P-256"
        ))));
    }
    Ok(bytes_attr(&attrs, AttributeType::EcPoint)
        .and_then(der::ec_point)
        .ok_or_else(|| {
            HsmError::Failed(format!(
                "the public key beside the key with {what} has no uncompressed P-256 CKA_EC_POINT"
            ))
        })?)
}

/// Pairwise consistency: the token's signature with the private key verifies with the public
/// key (in software, with the p256 crate).
fn consistency(
    session: &Session,
    handle: ObjectHandle,
    public: &[u8; 65],
    what: &str,
) -> Result<(), Step> {
    let digest = Sha256::digest(CONSISTENCY_MESSAGE);
    let raw = raw_sign(session, handle, &digest)?;
    if verifies(public, &digest, &raw) {
        Ok(())
    } else {
        Err(Step::Hsm(HsmError::Config(format!(
            "the public key object beside the key with {what} does not match it (a test signature does not verify)"
        ))))
    }
}

/// Refuses a private key this crate will not sign certificates with.
fn check_private(attrs: &[Attribute], what: &str) -> Result<(), HsmError> {
    let refuse = |why: &str| {
        Err(HsmError::Config(format!(
            "the private key with {what} {why}"
        )))
    };
    if key_type(attrs) != Some(KeyType::EC) {
        return refuse("is not an EC key");
    }
    if bytes_attr(attrs, AttributeType::EcParams) != Some(der::P256_PARAMS) {
        return refuse("is not on the P-256 curve (CKA_EC_PARAMS is not prime256v1)");
    }
    let p = protection(attrs)?;
    if !p.sign {
        return refuse("may not sign (CKA_SIGN false)");
    }
    if !p.sensitive {
        return refuse("is not sensitive (CKA_SENSITIVE false): its value could be read out");
    }
    if p.extractable {
        return refuse(
            "is extractable (CKA_EXTRACTABLE true): it could be wrapped out of the token",
        );
    }
    // A key that was readable or extractable at some point may have a copy outside the token.
    if !p.always_sensitive || !p.never_extractable {
        return refuse(
            "was readable or extractable once (CKA_ALWAYS_SENSITIVE or CKA_NEVER_EXTRACTABLE \
             false): a copy of it may exist outside the token",
        );
    }
    if bool_attr(attrs, AttributeType::AlwaysAuthenticate) == Some(true) {
        return refuse("needs a login per use (CKA_ALWAYS_AUTHENTICATE), which is not supported");
    }
    Ok(())
}

fn verifies(public: &[u8; 65], digest: &[u8], raw: &[u8]) -> bool {
    let Ok(key) = p256::ecdsa::VerifyingKey::from_sec1_bytes(public) else {
        return false;
    };
    let Ok(signature) = p256::ecdsa::Signature::from_slice(raw) else {
        return false;
    };
    key.verify_prehash(digest, &signature).is_ok()
}
