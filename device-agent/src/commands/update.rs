//! `update --release DIR`: check a signed firmware release and install it into the inactive
//! slot (see [`crate::firmware`]). Needs no silicon and no service: the release carries its
//! own proof, checked against the owner root the device pinned when it onboarded.

use std::path::Path;

use oxroot_client::release::Release;

use crate::error::AgentError;
use crate::firmware::Slots;
use crate::report::{Console, Report};
use crate::state::StateDir;

pub(super) fn update(
    state: &StateDir,
    release_dir: &Path,
    console: &mut Console<'_>,
) -> Result<(), AgentError> {
    // The credential holds the trust anchor (the owner's root) and the policy a release must
    // name; a device that never onboarded trusts no firmware signer yet.
    let credential = state.require_credential()?;
    let release = Release::read(release_dir).map_err(|e| AgentError::File {
        path: e.path,
        problem: e.source.to_string(),
    })?;
    let update = Slots::of(state).install(&release, &credential)?;
    let title = if update.changed {
        "installed"
    } else {
        "already running"
    };
    Report::new(title)
        .field("name", update.installed.name.clone())
        .field("version", update.installed.version.clone())
        .field("security_counter", update.installed.security_counter)
        .field("measurement", update.installed.measurement.clone())
        .field(
            "slot",
            match update.slot {
                crate::firmware::Slot::A => "a",
                crate::firmware::Slot::B => "b",
            },
        )
        .field(
            "next",
            if update.changed {
                "renew: the certificate of the firmware that ran before no longer matches"
            } else {
                "nothing: this release is the firmware that runs"
            },
        )
        .print(console)
}
