//! Silicon files come from disk or from fw_cfg: any bytes must parse or be
//! refused without a panic, and whatever parses must re-encode identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rot_core::silicon_file;

fuzz_target!(|data: &[u8]| {
    if let Ok(chip) = silicon_file::decode(data) {
        assert_eq!(silicon_file::encode(&chip).as_slice(), data);
    }
});
