//! Migration: devices enrolled with construction 1 before construction 2 existed
//! keep their identity. The golden values below were printed by the rot-core of
//! commit 3c93cfe (the last one before helper data version 2), from a fixed
//! reference readout and from a fixed emulated chip; this build must reproduce
//! the helper data byte for byte and reconstruct the same DeviceId from it.
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]
#![cfg(feature = "emulator")]

use rot_core::emulator::{ChipSeed, EmulatedChip, OperatingConditions};
use rot_core::extractor::{
    Construction, EnrolMode, enrol_from_reference, enrol_with, reconstruct,
    reconstruct_from_readout,
};
use rot_core::hazmat::Readout;
use rot_core::helper_data::HelperData;

/// Helper data of `enrol_from_reference` over the reference below (508 bytes, hex).
const REFERENCE_HELPER: &[&str] = &[
    "4f48010189622c6578fe8c35afaeb5ab1ec4e120c7056a701c8c1690e58558714789cc85ad0c274325babaa69bc09e12",
    "5cdf57baf87f69116ed7db74d0eb374815903ce69658507a76a348c3bc88fdc4d0a798d2dc3102572dce6de6f7a11456",
    "59f50bf5b132732404f8812f89f6f23d02bc6eb7eb59217e5fb5a086cfd7474f3b8cc691857c181d47e031b1a6bc91e3",
    "71e5a35bce174e3873d2d568e89b6809689730fca2141b0b4a9bf8dd92d2ba5a33fe15c1f1655d6951c967f2dff10b28",
    "1aceff1c9f4a743219820ab8b59ad98cbf7924abd3293e3f22b0ae9efbbf202e26d4498eb820576c6bd9c35480e4c655",
    "0de2ad4fe647110670ab5cffc4c7630754ad84ea8c6e3c5528c172c9aaa2a59b4efb1fddc10d72587cf39713e1894c41",
    "07b67287ab063f63658504a49dca86323c80d6b9fd7379213ee82589d6e32f6075efbd659050485216dcc940b884e9f4",
    "909826d0da3b1a774d91ece5f2ad0466098a8af6b43e631454c77fd28ffeea1562c3ef34ef55354e1f8a1e84c9d9537f",
    "7bb378938376003d27bfb0b2a3b081d321da5da6c81f561013ad2b95ee93702108e8b17fa6180f3b0aa446df94d8a27a",
    "53a194c2f46945493196e6f1dafd1b184af101e199426c1a79fd8be61d4f9b49a9d7aebb4cb2f89faeb7b3e634463a5c",
    "19e1e40feec34524408597d852bc68f675b0add36d77651014135d78",
];
const REFERENCE_DEVICE_ID: &str =
    "cf67d00998a58408e88ed95e7733c50c3b1eecbc0978a23c3de5b1c65746b791";

/// Helper data of `enrol` on the chip below, first power-up noise seed [9; 32].
const CHIP_HELPER: &[&str] = &[
    "4f480101913bcb8906e31a60558a2edd7f4e6c99c2b66b0933dfa76d03da117228a9663594564ee068790ebf9805d59d",
    "d88aeb5048e3e480197a894c5ff6367262a328dac871119d4c3731697448a1236471aae1af8042569d1c46ab24d01817",
    "cbe677e7d29722cc0d95dc92573b2524cd07daf93b5229018215f4bee58dc23f94291462d3550e34f3fcfde3dddace35",
    "c3c587da625e790d8a7780e11b036ea6ea579c1f22e09ca223c50cb022c78e34ce994f530d052357531d26a329cb9207",
    "f9c2c6b6fa659f161547ff31fc7bc29784e7ba0b111818787740b90861f595f88e5af239158063cfbd6ff7be23922564",
    "ffc8627c7823ffdbd66be2a187b83fe1c2a3b357df3994db87b2e7d8137be4d56e42c3bd8fc6913097f5896b4b7a3913",
    "2ac7d008dafe16f285a793fa0d12b9630adabef02aa3c318a5e9a022bcdfbc56a7d5ff01355be38036bd995fac62376a",
    "1f10eca3b9446761c74a307ecddfbee83feaef9a9bfba24b61ab059d5f7eedcc918b6260b4f6ccf018bbb8df2b39977d",
    "6b8dc8e1a8ca4dbcd6d9efdd740a1230eeb9ae378c1001203c0b5288dd593681fd155f47b3b510ef062d732b1c9346ce",
    "7cc03571c880d9793871e242a0e220db580bf1f348bc7b03162ce0359cbf140b53c9400477fff4026bc9aacaf8639e6e",
    "9379341775bc3a84c29219b83887f0852c9a4a40543ae8c58618b03d",
];
const CHIP_DEVICE_ID: &str = "bd3cc598866d660442c8cadbce07cc13cb64bf41368e96abc224cadb3821b969";

fn golden_reference() -> Readout {
    core::array::from_fn(|i| (i as u8).wrapping_mul(151) ^ 0x6d)
}

fn golden_chip() -> ChipSeed {
    ChipSeed::from_bytes(*b"oxroot v1 migration golden chip!")
}

fn bytes(lines: &[&str]) -> Vec<u8> {
    hex::decode(lines.concat()).expect("golden hex")
}

#[test]
fn construction_one_writes_the_same_helper_data_as_before() {
    let enrolment = enrol_from_reference(&golden_reference());
    assert_eq!(
        enrolment.helper_data.as_bytes(),
        bytes(REFERENCE_HELPER).as_slice()
    );
    assert_eq!(
        enrolment.seeds.enrolment_key().device_id().to_string(),
        REFERENCE_DEVICE_ID
    );
    // The unbiased emulator makes the same chip, and construction 1 enrols it the same way.
    let mut source = EmulatedChip::new(&golden_chip(), OperatingConditions::NOMINAL, [9; 32]);
    let enrolment = enrol_with(
        &mut source,
        None,
        EnrolMode::FirstEnrolment,
        Construction::V1,
    )
    .expect("enrols");
    assert_eq!(
        enrolment.helper_data.as_bytes(),
        bytes(CHIP_HELPER).as_slice()
    );
    assert_eq!(
        enrolment.seeds.enrolment_key().device_id().to_string(),
        CHIP_DEVICE_ID
    );
}

#[test]
fn stored_construction_one_helper_data_reconstructs_the_same_identity() {
    let helper = HelperData::from_bytes(&bytes(REFERENCE_HELPER)).expect("valid v1 record");
    assert_eq!(helper.construction(), Construction::V1);
    let seeds = reconstruct_from_readout(&golden_reference(), &helper).expect("noise-free");
    assert_eq!(
        seeds.enrolment_key().device_id().to_string(),
        REFERENCE_DEVICE_ID
    );

    let helper = HelperData::from_bytes(&bytes(CHIP_HELPER)).expect("valid v1 record");
    for noise in 1..=5u8 {
        let mut later =
            EmulatedChip::new(&golden_chip(), OperatingConditions::NOMINAL, [noise; 32]);
        let seeds = reconstruct(&mut later, &helper).expect("reconstructs at nominal");
        assert_eq!(
            seeds.enrolment_key().device_id().to_string(),
            CHIP_DEVICE_ID
        );
    }
}
