//! Helper data is attacker-controlled: parsing any bytes, and reconstructing
//! from whatever parses, must never panic. Both versions go through this parser;
//! `helper_data_v2` reaches past the integrity tag into the version-2 layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rot_core::extractor::reconstruct_from_readout;
use rot_core::helper_data::HelperData;

fuzz_target!(|data: &[u8]| {
    if let Ok(helper) = HelperData::from_bytes(data) {
        assert_eq!(helper.as_bytes(), data);
        let readout = [0x5a; rot_core::hazmat::READOUT_BYTES];
        let _ = reconstruct_from_readout(&readout, &helper);
    }
});
