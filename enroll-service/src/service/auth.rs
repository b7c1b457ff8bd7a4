//! Who is calling the operator API, and what they may do.
//!
//! The TLS layer has already verified the client certificate chains to the service's root
//! (rustls, with the root as the only client CA). Here the leaf must also be an *operator*
//! certificate: device certificates from the same CA carry no operator URN and are refused.

use time::OffsetDateTime;
use tonic::Request;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::ServiceError;
use crate::pki::{OperatorIdentity, PLATFORM_OWNER, Role, Serial};

/// An authenticated operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Name (certificate CN).
    pub name: String,
    /// Owner, or `*` for platform operators.
    pub owner: String,
    /// Role.
    pub role: Role,
    /// Serial of the presented certificate.
    pub serial: Serial,
    /// Its validity end.
    pub not_after: OffsetDateTime,
}

impl Caller {
    /// The caller of `request`, from its TLS client certificate.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`] when there is no client certificate or it is not an
    /// operator certificate issued by this service.
    pub fn from_request<T>(request: &Request<T>) -> Result<Self, ServiceError> {
        let certs = request.peer_certs().ok_or_else(|| {
            ServiceError::Unauthenticated(
                "the operator API needs a client certificate issued by this service".into(),
            )
        })?;
        let leaf = certs.first().ok_or_else(|| {
            ServiceError::Unauthenticated("the client certificate chain is empty".into())
        })?;
        Self::from_certificate_der(leaf.as_ref())
    }

    /// The caller named by a (TLS-verified) certificate.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`] if it is not an operator certificate.
    pub fn from_certificate_der(der: &[u8]) -> Result<Self, ServiceError> {
        let identity = OperatorIdentity::from_certificate_der(der).map_err(|e| {
            ServiceError::Unauthenticated(format!("not an operator certificate: {e}"))
        })?;
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|_| ServiceError::Unauthenticated("unreadable client certificate".into()))?;
        let not_after = cert.validity().not_after.to_datetime();
        // Every certificate this service issues has a positive serial of at most 128 bits.
        let serial = cert.serial.to_str_radix(16).parse().map_err(|_| {
            ServiceError::Unauthenticated(
                "the operator certificate's serial is not one this service issues".into(),
            )
        })?;
        Ok(Self {
            name: identity.name,
            owner: identity.owner,
            role: identity.role,
            serial,
            not_after,
        })
    }

    /// `<owner>/<name>` (`*/<name>` for a platform operator): the operator, unambiguously.
    /// Names are unique only within an owner, so an owner's admin may call an operator `admin`
    /// like the platform's first admin; the owner tells them apart in every record.
    #[must_use]
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// `operator:<owner>/<name>`, the audit actor.
    #[must_use]
    pub fn actor(&self) -> String {
        format!("operator:{}", self.qualified_name())
    }

    /// A platform operator (owner `*`), who acts for every owner.
    #[must_use]
    pub fn is_platform(&self) -> bool {
        self.owner == PLATFORM_OWNER
    }

    /// Refuses unless the caller has one of `roles`.
    ///
    /// # Errors
    /// [`ServiceError::PermissionDenied`] naming the role needed.
    pub fn require(&self, rpc: &str, roles: &[Role]) -> Result<(), ServiceError> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ServiceError::PermissionDenied(format!(
            "{rpc} needs role {}; the caller is {}",
            names.join(" or "),
            self.role
        )))
    }

    /// The owner a request acts on: the request's `owner` field resolved by the contract's
    /// rules (empty = the caller's own; a platform operator must name one; others may only
    /// name their own).
    ///
    /// # Errors
    /// [`ServiceError::InvalidArgument`] when a platform operator leaves it empty or names an
    /// invalid owner; [`ServiceError::PermissionDenied`] for another owner.
    pub fn owner_for(&self, field: &str, requested: &str) -> Result<String, ServiceError> {
        if self.is_platform() {
            if requested.is_empty() || requested == PLATFORM_OWNER {
                return Err(ServiceError::invalid(
                    field,
                    "a platform operator must name the owner to act on",
                ));
            }
            if !crate::pki::is_valid_owner(requested) {
                return Err(ServiceError::invalid(
                    field,
                    "an owner is 1 to 63 characters of [a-z0-9-], starting with a letter or digit",
                ));
            }
            return Ok(requested.to_owned());
        }
        if requested.is_empty() || requested == self.owner {
            Ok(self.owner.clone())
        } else {
            Err(ServiceError::PermissionDenied(format!(
                "the caller acts for owner {:?}, not {requested:?}",
                self.owner
            )))
        }
    }

    /// An owner filter for list calls: platform operators may leave it empty (all owners).
    ///
    /// # Errors
    /// As [`Caller::owner_for`], except that an empty filter is allowed for platform callers.
    pub fn owner_filter(
        &self,
        field: &str,
        requested: &str,
    ) -> Result<Option<String>, ServiceError> {
        if self.is_platform() && requested.is_empty() {
            return Ok(None);
        }
        self.owner_for(field, requested).map(Some)
    }

    /// Whether the caller may see a resource of `owner` (others' resources look absent).
    #[must_use]
    pub fn can_see(&self, owner: Option<&str>) -> bool {
        self.is_platform() || owner == Some(self.owner.as_str())
    }
}
