//! `--json`: the proto3 JSON mapping of the contract's messages, made from the contract's own
//! descriptors at run time.
//!
//! A message is encoded, decoded again as a `prost_reflect::DynamicMessage` of the same full
//! name from [`oxroot_proto::FILE_DESCRIPTOR_SET`], and serialised by prost-reflect. Nothing is
//! written field by field, so a field added to the contract appears in the output as soon as
//! enrollctl is rebuilt with the new contract. See [the output contract](super) for the
//! printer options and for the few keys enrollctl adds beside a message's fields.

use std::io::{self, Write};
use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::Value;

/// The printer options, each one the proto3 JSON mapping allows (see [`super`]): field names
/// as in the `.proto`, every field without presence printed even when it holds its default,
/// enum values by name, 64-bit integers as strings.
const OPTIONS: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .skip_default_fields(false)
    .use_enum_numbers(false)
    .stringify_64_bit_integers(true);

/// The contract's descriptors, decoded once.
static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(oxroot_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
});

/// Why a message could not be printed as JSON.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// The contract's embedded descriptor set does not decode (a broken build).
    #[error("the contract's descriptor set does not decode: {0}")]
    Descriptors(String),
    /// No message of this full name in the contract (a broken build).
    #[error("{0} is not a message of the contract")]
    UnknownMessage(String),
    /// The message cannot be written in the mapping, e.g. a timestamp outside the years
    /// 0001–9999, which the mapping cannot express.
    #[error("{message} cannot be written as proto3 JSON: {detail}")]
    Unrepresentable {
        /// The message's full name.
        message: String,
        /// What prost-reflect refused.
        detail: String,
    },
    /// A key enrollctl adds beside a message's fields is also a field of the message: the
    /// contract grew a field of that name, and enrollctl must rename its key.
    #[error("{message} has a field {key:?}, the name of a key enrollctl adds to its output")]
    KeyClash {
        /// The message's full name.
        message: String,
        /// The key.
        key: &'static str,
    },
}

/// `message` in the proto3 JSON mapping, with the printer options of [the output
/// contract](super): always a JSON object.
///
/// # Errors
/// [`JsonError`]: a message the mapping cannot express (a timestamp out of range), or a build
/// whose contract lacks the message.
pub fn message<M: prost::Message + prost::Name>(message: &M) -> Result<Value, JsonError> {
    map(&M::full_name(), &message.encode_to_vec())
}

/// Several messages as a JSON array, each through [`message`].
///
/// # Errors
/// The first message's [`JsonError`].
pub fn messages<'a, M: prost::Message + prost::Name + 'a>(
    items: impl IntoIterator<Item = &'a M>,
) -> Result<Value, JsonError> {
    items
        .into_iter()
        .map(message)
        .collect::<Result<_, _>>()
        .map(Value::Array)
}

/// `message` as JSON with keys of enrollctl's own beside its fields: the local facts of a
/// command (the files it wrote, the records it could not read), documented per command in
/// [`super`]. A key that is also a field name of the message is refused rather than allowed to
/// hide the field.
///
/// # Errors
/// [`JsonError::KeyClash`], or what [`message`] refuses.
pub fn message_with<M: prost::Message + prost::Name>(
    message: &M,
    local: impl IntoIterator<Item = (&'static str, Value)>,
) -> Result<Value, JsonError> {
    let full_name = M::full_name();
    let descriptor = descriptor(&full_name)?;
    let local: Vec<_> = local.into_iter().collect();
    if let Some(&(key, _)) = local.iter().find(|(key, _)| {
        descriptor
            .fields()
            .any(|field| field.name() == *key || field.json_name() == *key)
    }) {
        return Err(JsonError::KeyClash {
            message: full_name,
            key,
        });
    }
    let mut value = map(&full_name, &message.encode_to_vec())?;
    if let Value::Object(object) = &mut value {
        object.extend(
            local
                .into_iter()
                .map(|(key, local)| (key.to_owned(), local)),
        );
    }
    Ok(value)
}

/// Writes one compact JSON document and a newline.
///
/// # Errors
/// The writer's error.
pub fn json_line(out: &mut dyn Write, value: &Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// The mapping: the encoded message `bytes` of type `full_name`, as JSON.
fn map(full_name: &str, bytes: &[u8]) -> Result<Value, JsonError> {
    let unrepresentable = |detail: String| JsonError::Unrepresentable {
        message: full_name.to_owned(),
        detail,
    };
    let dynamic = DynamicMessage::decode(descriptor(full_name)?, bytes)
        .map_err(|e| unrepresentable(e.to_string()))?;
    // serde_json's Value keeps object keys sorted (this crate does not enable serde_json's
    // preserve_order), so maps such as labels and audit details print in the same order every
    // time, whatever order the service sent them in.
    let value = dynamic
        .serialize_with_options(serde_json::value::Serializer, &OPTIONS)
        .map_err(|e| unrepresentable(e.to_string()))?;
    debug_assert!(matches!(value, Value::Object(_)) || full_name.starts_with("google."));
    Ok(value)
}

fn descriptor(full_name: &str) -> Result<MessageDescriptor, JsonError> {
    POOL.as_ref()
        .map_err(|e| JsonError::Descriptors(e.clone()))?
        .get_message_by_name(full_name)
        .ok_or_else(|| JsonError::UnknownMessage(full_name.to_owned()))
}

#[cfg(test)]
mod tests;
