//! How the records' typed identifiers are stored: as the same lowercase hex text the registry
//! has always held, so records written before the fields were typed read unchanged (postcard
//! encodes a string as its length and bytes, JSON as a string).
//!
//! Used with `#[serde(with = "…")]`; rot-core's types are `no_std` and know nothing of serde.

use std::collections::BTreeMap;

use rot_core::keys::{DeviceId, PublicKey};
use serde::de::Error;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

fn public_key_from_hex<E: Error>(text: &str) -> Result<PublicKey, E> {
    let bytes = hex::decode(text).map_err(E::custom)?;
    PublicKey::from_sec1(&bytes).map_err(E::custom)
}

/// A [`DeviceId`] as its 64 lowercase hex characters.
pub(crate) mod device_id {
    use super::{Deserialize, Deserializer, DeviceId, Error, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        id: &DeviceId,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(id)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DeviceId, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(D::Error::custom)
    }
}

/// A [`PublicKey`] as the hex of its SEC1 uncompressed encoding.
pub(crate) mod public_key {
    use super::{Deserialize, Deserializer, PublicKey, Serializer, public_key_from_hex};

    pub(crate) fn serialize<S: Serializer>(
        key: &PublicKey,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(key.as_bytes()))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<PublicKey, D::Error> {
        public_key_from_hex(&String::deserialize(deserializer)?)
    }
}

/// The public key proved for each key slot, each as [`public_key`] stores it.
pub(crate) mod public_keys_by_slot {
    use super::{
        BTreeMap, Deserialize, Deserializer, PublicKey, Serialize, Serializer, public_key_from_hex,
    };

    pub(crate) fn serialize<S: Serializer>(
        keys: &BTreeMap<u8, PublicKey>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        keys.iter()
            .map(|(slot, key)| (*slot, hex::encode(key.as_bytes())))
            .collect::<BTreeMap<u8, String>>()
            .serialize(serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<u8, PublicKey>, D::Error> {
        BTreeMap::<u8, String>::deserialize(deserializer)?
            .into_iter()
            .map(|(slot, text)| Ok((slot, public_key_from_hex(&text)?)))
            .collect()
    }
}
