//! The codec of every oxroot.v1 stub: prost's, except that a *request* that does not decode is
//! INVALID_ARGUMENT, as the contract promises, not INTERNAL (prost's mapping, which would tell
//! a client that sent garbage that the service is broken).
//!
//! The same generated code serves both sides, so the decoder tells a request from a response by
//! the message's name: buf's STANDARD lint (RPC_REQUEST_STANDARD_NAME, checked in tests/run)
//! makes every RPC's request message end in `Request`, and no response does. A response that
//! does not decode stays INTERNAL for the client that received it.

use std::marker::PhantomData;

use prost::{Message, Name};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// [`tonic_prost::ProstCodec`] with undecodable requests answered INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct ContractCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for ContractCodec<T, U> {
    fn default() -> Self {
        Self {
            _messages: PhantomData,
        }
    }
}

impl<T, U> Codec for ContractCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Name + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ContractDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ContractDecoder(ProstDecoder::new(BufferSettings::default()))
    }
}

/// Decodes `U`; see [`ContractCodec`].
#[derive(Debug)]
pub struct ContractDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default + Name> Decoder for ContractDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            if is_request::<U>() {
                Status::invalid_argument(format!(
                    "the request does not decode as {}: {}",
                    U::full_name(),
                    status.message()
                ))
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// Whether `U` is an RPC's request message (by the contract's naming rule).
fn is_request<U: Name>() -> bool {
    U::NAME.ends_with("Request")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;

    #[test]
    fn requests_and_responses_are_told_apart_by_name() {
        assert!(is_request::<v1::RegisterRequest>());
        assert!(is_request::<v1::OnboardRequest>());
        assert!(is_request::<v1::ImportDevicesRequest>());
        assert!(!is_request::<v1::RegisterResponse>());
        assert!(!is_request::<v1::OnboardResponse>());
        assert!(!is_request::<v1::WatchBatchResponse>());
    }
}
