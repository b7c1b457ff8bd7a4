//! Version-2 helper data with an arbitrary body and a *valid* integrity tag: what an
//! attacker who rewrites helper data can hand the device. The tag is recomputed here so
//! the fuzzer reaches the debiasing-layout parser and the soft decoder, which a random
//! record would never get past. Nothing may panic; whatever parses must reconstruct or
//! fail opaquely, and re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rot_core::extractor::reconstruct_from_readout;
use rot_core::helper_data::{HelperData, V2_HELPER_DATA_BYTES};
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let mut record = [0u8; V2_HELPER_DATA_BYTES];
    record[..4].copy_from_slice(b"OH\x02\x02");
    let body = &mut record[4..V2_HELPER_DATA_BYTES - 8];
    let len = data.len().min(body.len());
    body[..len].copy_from_slice(&data[..len]);
    let tag = Sha256::digest(&record[..V2_HELPER_DATA_BYTES - 8]);
    record[V2_HELPER_DATA_BYTES - 8..].copy_from_slice(&tag[..8]);
    if let Ok(helper) = HelperData::from_bytes(&record) {
        assert_eq!(helper.as_bytes(), record.as_slice());
        assert!(helper.debias_layout().is_some());
        // Any readout: the data decides nothing the decoder branches on.
        let readout = [data.first().copied().unwrap_or(0); rot_core::hazmat::READOUT_BYTES];
        let _ = reconstruct_from_readout(&readout, &helper);
    }
});
