//! Paging for the List RPCs and QueryAudit.
//!
//! A page token is the hex encoding of a small JSON object: a fingerprint of the request's
//! filters and the key of the last item returned. The fingerprint lets the service refuse a
//! token used with other filters (the contract's rule) instead of silently returning a page of
//! a different listing; the key makes the next page start exactly after the previous one, so
//! items added meanwhile never shift pages.
//!
//! ```text
//!  token = hex(JSON {"f": hex(SHA-256(rpc, filters…)[..8]), "k": [last key parts…]})
//! ```

use aws_lc_rs::digest;
use rot_core::keys::DeviceId;
use serde::{Deserialize, Serialize};

use crate::error::ServiceError;
use crate::pki::Serial;

/// Page size when the request says 0.
const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page; larger requests are served this many.
const MAX_PAGE_SIZE: usize = 1000;
/// Items a single call scans through filters before it returns a (possibly short) page with a
/// token to continue: bounds the work of a call whose filter matches little.
const MAX_SCAN: usize = 100_000;

/// The page size the contract says a request's `page_size` means.
pub(super) fn page_size(requested: u32) -> usize {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => (n as usize).min(MAX_PAGE_SIZE),
    }
}

/// The decoded form of a page token.
#[derive(Serialize, Deserialize)]
struct Token {
    /// Filter fingerprint.
    f: String,
    /// Key of the last item of the previous page.
    k: Vec<String>,
}

/// The key of a listing's items, as a page token carries it: a few strings.
pub(super) trait PageKey: Sized {
    /// The key's parts.
    fn to_parts(&self) -> Vec<String>;
    /// The key from its parts; `None` if they are not a key of this listing.
    fn from_parts(parts: &[String]) -> Option<Self>;
}

impl PageKey for String {
    fn to_parts(&self) -> Vec<String> {
        vec![self.clone()]
    }

    fn from_parts(parts: &[String]) -> Option<Self> {
        match parts {
            [one] => Some(one.clone()),
            _ => None,
        }
    }
}

impl PageKey for (String, String) {
    fn to_parts(&self) -> Vec<String> {
        vec![self.0.clone(), self.1.clone()]
    }

    fn from_parts(parts: &[String]) -> Option<Self> {
        match parts {
            [a, b] => Some((a.clone(), b.clone())),
            _ => None,
        }
    }
}

impl PageKey for (String, String, String) {
    fn to_parts(&self) -> Vec<String> {
        vec![self.0.clone(), self.1.clone(), self.2.clone()]
    }

    fn from_parts(parts: &[String]) -> Option<Self> {
        match parts {
            [a, b, c] => Some((a.clone(), b.clone(), c.clone())),
            _ => None,
        }
    }
}

/// Keys with a text form of their own (a DeviceId, a serial, an audit sequence number).
macro_rules! page_key_by_text {
    ($($key:ty),*) => {$(
        impl PageKey for $key {
            fn to_parts(&self) -> Vec<String> {
                vec![self.to_string()]
            }

            fn from_parts(parts: &[String]) -> Option<Self> {
                match parts {
                    [one] => one.parse().ok(),
                    _ => None,
                }
            }
        }
    )*};
}

page_key_by_text!(DeviceId, Serial, u64);

/// The paging state of one request: which filters it used and where it resumes.
#[derive(Debug)]
pub(super) struct Pager {
    /// The RPC, for error messages.
    rpc: String,
    /// Hex of the first 8 bytes of SHA-256 over the RPC name and filter values.
    fingerprint: String,
    /// Items per page.
    size: usize,
}

impl Pager {
    /// A pager for `rpc` with the request's filter values (in a fixed order).
    pub(super) fn new(rpc: &str, filters: &[&str], page_size_field: u32) -> Self {
        let mut context = digest::Context::new(&digest::SHA256);
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        for part in std::iter::once(rpc).chain(filters.iter().copied()) {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part.as_bytes());
        }
        Self {
            rpc: rpc.to_owned(),
            fingerprint: hex::encode(&context.finish().as_ref()[..8]),
            size: page_size(page_size_field),
        }
    }

    /// The key to resume after, from the request's `page_token` (`None` for the first page).
    ///
    /// # Errors
    /// [`ServiceError::InvalidArgument`] for a malformed token, one issued for other filters,
    /// or one whose key is not a key of this listing.
    pub(super) fn resume<K: PageKey>(&self, page_token: &str) -> Result<Option<K>, ServiceError> {
        let Some(parts) = self.resume_parts(page_token)? else {
            return Ok(None);
        };
        K::from_parts(&parts).map(Some).ok_or_else(|| {
            ServiceError::invalid("page_token", format!("is not a {} token", self.rpc))
        })
    }

    /// The token's key parts, after its fingerprint is checked.
    fn resume_parts(&self, page_token: &str) -> Result<Option<Vec<String>>, ServiceError> {
        if page_token.is_empty() {
            return Ok(None);
        }
        let malformed =
            || ServiceError::invalid("page_token", "is not a token this service issued");
        let bytes = hex::decode(page_token).map_err(|_| malformed())?;
        let token: Token = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
        if token.f != self.fingerprint {
            return Err(ServiceError::invalid(
                "page_token",
                "was issued for a request with other filters; repeat them or start over",
            ));
        }
        Ok(Some(token.k))
    }

    /// The `next_page_token` for a page that ended after `key` (`None`: last page).
    pub(super) fn token<K: PageKey>(&self, key: Option<&K>) -> String {
        key.map_or_else(String::new, |k| {
            let token = Token {
                f: self.fingerprint.clone(),
                k: k.to_parts(),
            };
            #[allow(clippy::unwrap_used, reason = "serialising strings cannot fail")]
            hex::encode(serde_json::to_vec(&token).unwrap())
        })
    }

    /// Reads one page: `fetch(after, n)` returns up to `n` items in listing order after the key
    /// `after`; `keep` applies the filters the store cannot. Returns the page and the key to
    /// resume after, if there may be more.
    ///
    /// # Errors
    /// `fetch`'s.
    pub(super) async fn collect<T, K: Clone, F>(
        &self,
        start: Option<K>,
        mut fetch: impl FnMut(Option<K>, usize) -> F,
        key: impl Fn(&T) -> K,
        mut keep: impl FnMut(&T) -> bool,
    ) -> Result<(Vec<T>, Option<K>), ServiceError>
    where
        F: Future<Output = Result<Vec<T>, ServiceError>>,
    {
        let mut page = Vec::with_capacity(self.size);
        let mut cursor = start;
        let mut scanned = 0;
        // One more than a page, so a full last page is recognised without an empty extra page.
        let block = self.size + 1;
        loop {
            let items = fetch(cursor.clone(), block).await?;
            let exhausted = items.len() < block;
            for item in items {
                let item_key = key(&item);
                if keep(&item) {
                    if page.len() == self.size {
                        let last = page.last().map(&key);
                        return Ok((page, last));
                    }
                    page.push(item);
                }
                cursor = Some(item_key);
                scanned += 1;
            }
            if exhausted {
                return Ok((page, None));
            }
            if scanned >= MAX_SCAN {
                return Ok((page, cursor));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_follow_the_contract() {
        assert_eq!(page_size(0), 100);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(5000), 1000);
    }

    #[test]
    fn tokens_round_trip_and_bind_the_filters() {
        let pager = Pager::new("ListDevices", &["b1", ""], 10);
        let token = pager.token(Some(&"abc".to_owned()));
        assert_eq!(pager.resume::<String>(&token), Ok(Some("abc".to_owned())));
        let other = Pager::new("ListDevices", &["b2", ""], 10);
        assert!(matches!(
            other.resume::<String>(&token),
            Err(ServiceError::InvalidArgument { .. })
        ));
        assert!(pager.resume::<String>("zz").is_err());
        assert_eq!(pager.token::<String>(None), "");
    }

    #[test]
    fn a_token_of_another_key_shape_is_refused_naming_the_rpc() {
        let pager = Pager::new("ListPolicies", &[], 10);
        let pair = pager.token(Some(&("acme".to_owned(), "broker".to_owned())));
        assert!(pager.resume::<(String, String)>(&pair).is_ok());
        let error = pager.resume::<u64>(&pair).unwrap_err();
        assert!(
            error.to_string().contains("is not a ListPolicies token"),
            "{error}"
        );
        let number = pager.token(Some(&7u64));
        assert_eq!(pager.resume::<u64>(&number), Ok(Some(7)));
        assert!(
            pager
                .resume::<Serial>(&pager.token(Some(&"0x7".to_owned())))
                .is_err()
        );
    }

    #[tokio::test]
    async fn collect_filters_and_resumes() {
        let items: Vec<u32> = (1..=50).collect();
        let pager = Pager::new("x", &[], 4);
        let fetch = |after: Option<u32>, n: usize| {
            let page = items
                .iter()
                .copied()
                .filter(|i| after.is_none_or(|a| *i > a))
                .take(n)
                .collect();
            async move { Ok(page) }
        };
        let (page, next) = pager
            .collect(None, fetch, |i| *i, |i| i % 3 == 0)
            .await
            .expect("page");
        assert_eq!(page, vec![3, 6, 9, 12]);
        assert_eq!(next, Some(12));
        let (page, next) = pager
            .collect(Some(45), fetch, |i| *i, |i| i % 3 == 0)
            .await
            .expect("page");
        assert_eq!(page, vec![48]);
        assert_eq!(next, None);
    }
}
