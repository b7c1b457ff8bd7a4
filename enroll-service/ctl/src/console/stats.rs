//! What the fleet overview counts: where each device stands, per owner and per policy,
//! onboardings per minute over the last hour, and certificate expiry by week. Pure functions
//! of the device list, tested without a service.

use std::collections::BTreeMap;

use oxroot_proto::v1::DeviceState;

/// Seconds in a week, the expiry histogram's bucket.
pub(crate) const WEEK: i64 = 7 * 86_400;
/// Weeks the expiry histogram shows one by one at most (two years); later expiries share
/// one bar.
pub(crate) const MAX_EXPIRY_WEEKS: usize = 104;
/// Weeks it shows at least, so that a young fleet's chart still reads as weeks.
pub(crate) const MIN_EXPIRY_WEEKS: usize = 8;
/// Minutes of the onboarding rate chart.
pub(crate) const RATE_MINUTES: usize = 60;

/// Where a device stands, as the overview counts it and the device search filters it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Standing {
    /// Listed in a batch, not registered yet.
    AwaitingRegistration,
    /// Registered, in no batch.
    Registered,
    /// Registered and in a batch, not (re-)onboarded yet.
    InBatch,
    /// Holding a valid certificate outside its renew window.
    Onboarded,
    /// Holding a valid certificate inside its policy's renew window.
    RenewalDue,
    /// Onboarded, but its certificate is past `not_after`.
    Expired,
    /// Revoked (final).
    Revoked,
}

impl Standing {
    /// Every standing, in the overview's column order.
    pub(crate) const ALL: [Self; 7] = [
        Self::AwaitingRegistration,
        Self::Registered,
        Self::InBatch,
        Self::Onboarded,
        Self::RenewalDue,
        Self::Expired,
        Self::Revoked,
    ];

    /// The name in URLs (`?filter=renewal-due`).
    pub(crate) fn slug(self) -> &'static str {
        match self {
            Self::AwaitingRegistration => "awaiting-registration",
            Self::Registered => "registered",
            Self::InBatch => "in-batch",
            Self::Onboarded => "onboarded",
            Self::RenewalDue => "renewal-due",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }

    /// The name on pages.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::AwaitingRegistration => "awaiting registration",
            Self::Registered => "registered, no batch",
            Self::InBatch => "in batch",
            Self::Onboarded => "onboarded",
            Self::RenewalDue => "renewal due",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }

    /// The standing a URL names.
    pub(crate) fn from_slug(slug: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.slug() == slug)
    }

    /// A valid certificate: onboarded, renewal due or not.
    pub(crate) fn is_valid(self) -> bool {
        matches!(self, Self::Onboarded | Self::RenewalDue)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The device's current certificate, as far as its standing depends on it (Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Validity {
    /// The certificate's `notAfter`.
    pub(crate) not_after: i64,
    /// Start of the policy's renew window; `None` when the policy has none.
    pub(crate) renew_from: Option<i64>,
}

/// Where a device in `state` with current certificate `validity` stands at `now`.
pub(crate) fn standing(state: DeviceState, validity: Option<Validity>, now: i64) -> Standing {
    match state {
        DeviceState::Revoked => Standing::Revoked,
        DeviceState::AwaitingRegistration => Standing::AwaitingRegistration,
        DeviceState::Ready | DeviceState::ReonboardPending => Standing::InBatch,
        DeviceState::Onboarded => match validity {
            Some(v) if now >= v.not_after => Standing::Expired,
            Some(Validity {
                renew_from: Some(from),
                ..
            }) if now >= from => Standing::RenewalDue,
            _ => Standing::Onboarded,
        },
        // A state newer than this client reads as the contract says: unspecified, which the
        // overview counts with the devices nobody has placed in a batch.
        DeviceState::Unassigned | DeviceState::Unspecified => Standing::Registered,
    }
}

/// One device as the overview and the search need it (a few dozen bytes, where the service's
/// `Device` carries its certificate: the index holds a hundred thousand of these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DeviceSummary {
    pub(crate) device_id: String,
    pub(crate) owner: String,
    pub(crate) batch_id: String,
    /// The batch's policy, or the current certificate's for a device in no batch.
    pub(crate) policy: String,
    pub(crate) standing: Standing,
    /// Serial of the current certificate; empty if none.
    pub(crate) serial: String,
    /// `notAfter` of the current certificate (Unix seconds).
    pub(crate) not_after: Option<i64>,
    /// When the current credential was first issued (Unix seconds).
    pub(crate) onboarded_at: Option<i64>,
    pub(crate) refusals: u64,
}

/// Devices per standing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts([u64; Standing::ALL.len()]);

impl Counts {
    pub(crate) fn get(&self, standing: Standing) -> u64 {
        self.0[standing.index()]
    }

    pub(crate) fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    fn add(&mut self, standing: Standing) {
        self.0[standing.index()] += 1;
    }
}

/// Everything the overview shows, computed once per device list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FleetStats {
    pub(crate) totals: Counts,
    pub(crate) by_owner: BTreeMap<String, Counts>,
    /// Keyed by (owner, policy); devices without a policy have an empty name.
    pub(crate) by_policy: BTreeMap<(String, String), Counts>,
    /// Onboardings in each of the last 60 minutes, oldest first (the last is the minute up to
    /// the list's time).
    pub(crate) onboardings_per_minute: Vec<u64>,
    /// Current certificates expiring in week 0, 1, … from the list's time, up to the last
    /// week that has any (at least [`MIN_EXPIRY_WEEKS`], at most [`MAX_EXPIRY_WEEKS`]).
    pub(crate) expiring_by_week: Vec<u64>,
    /// Current certificates expiring after that.
    pub(crate) expiring_later: u64,
    /// Current certificates already expired.
    pub(crate) expired: u64,
}

/// The overview's figures for `devices` at `now` (Unix seconds).
pub(crate) fn compute(devices: &[DeviceSummary], now: i64) -> FleetStats {
    let mut stats = FleetStats {
        totals: Counts::default(),
        by_owner: BTreeMap::new(),
        by_policy: BTreeMap::new(),
        onboardings_per_minute: vec![0; RATE_MINUTES],
        expiring_by_week: vec![0; MAX_EXPIRY_WEEKS],
        expiring_later: 0,
        expired: 0,
    };
    for device in devices {
        stats.totals.add(device.standing);
        stats
            .by_owner
            .entry(device.owner.clone())
            .or_default()
            .add(device.standing);
        stats
            .by_policy
            .entry((device.owner.clone(), device.policy.clone()))
            .or_default()
            .add(device.standing);
        if let Some(at) = device.onboarded_at {
            let ago = now - at;
            if (0..RATE_MINUTES as i64 * 60).contains(&ago) {
                stats.onboardings_per_minute[RATE_MINUTES - 1 - (ago / 60) as usize] += 1;
            }
        }
        // A revoked device's certificates are on the CRL: their expiry no longer matters.
        if let Some(not_after) = device.not_after
            && device.standing != Standing::Revoked
        {
            let left = not_after - now;
            if left <= 0 {
                stats.expired += 1;
            } else if let Some(week) = stats.expiring_by_week.get_mut((left / WEEK) as usize) {
                *week += 1;
            } else {
                stats.expiring_later += 1;
            }
        }
    }
    let weeks = stats
        .expiring_by_week
        .iter()
        .rposition(|&n| n > 0)
        .map_or(0, |last| last + 1)
        .max(MIN_EXPIRY_WEEKS);
    stats.expiring_by_week.truncate(weeks);
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn device(owner: &str, policy: &str, standing: Standing) -> DeviceSummary {
        DeviceSummary {
            device_id: "ab".repeat(32),
            owner: owner.into(),
            batch_id: String::new(),
            policy: policy.into(),
            standing,
            serial: String::new(),
            not_after: None,
            onboarded_at: None,
            refusals: 0,
        }
    }

    #[test]
    fn standings_follow_state_then_certificate() {
        let valid = |not_after, renew_from| {
            Some(Validity {
                not_after,
                renew_from,
            })
        };
        let onboarded = |v| standing(DeviceState::Onboarded, v, NOW);
        assert_eq!(onboarded(valid(NOW + 100, None)), Standing::Onboarded);
        assert_eq!(
            onboarded(valid(NOW + 100, Some(NOW + 1))),
            Standing::Onboarded
        );
        assert_eq!(onboarded(valid(NOW + 100, Some(NOW))), Standing::RenewalDue);
        assert_eq!(onboarded(valid(NOW, Some(NOW - 5))), Standing::Expired);
        assert_eq!(onboarded(None), Standing::Onboarded);
        assert_eq!(
            standing(DeviceState::Revoked, valid(NOW - 1, None), NOW),
            Standing::Revoked
        );
        assert_eq!(
            standing(DeviceState::ReonboardPending, valid(NOW + 1, None), NOW),
            Standing::InBatch
        );
        assert_eq!(
            standing(DeviceState::Unassigned, None, NOW),
            Standing::Registered
        );
        assert_eq!(
            standing(DeviceState::AwaitingRegistration, None, NOW),
            Standing::AwaitingRegistration
        );
        for s in Standing::ALL {
            assert_eq!(Standing::from_slug(s.slug()), Some(s));
        }
        assert_eq!(Standing::from_slug("valid"), None);
    }

    #[test]
    fn devices_are_counted_per_owner_and_policy() {
        let devices = [
            device("acme", "p1", Standing::Onboarded),
            device("acme", "p1", Standing::Revoked),
            device("acme", "p2", Standing::Onboarded),
            device("globex", "", Standing::Registered),
        ];
        let stats = compute(&devices, NOW);
        assert_eq!(stats.totals.total(), 4);
        assert_eq!(stats.totals.get(Standing::Onboarded), 2);
        assert_eq!(stats.by_owner["acme"].total(), 3);
        assert_eq!(stats.by_owner["globex"].get(Standing::Registered), 1);
        let p1 = stats.by_policy[&("acme".to_owned(), "p1".to_owned())];
        assert_eq!(
            (p1.get(Standing::Onboarded), p1.get(Standing::Revoked)),
            (1, 1)
        );
        assert_eq!(stats.by_policy.len(), 3);
    }

    #[test]
    fn onboardings_fall_into_their_minute_of_the_last_hour() {
        let at = |ago: i64| DeviceSummary {
            onboarded_at: Some(NOW - ago),
            ..device("acme", "p", Standing::Onboarded)
        };
        let devices = [at(0), at(59), at(60), at(3_599), at(3_600), at(-5)];
        let stats = compute(&devices, NOW);
        let rate = &stats.onboardings_per_minute;
        assert_eq!(rate.len(), 60);
        assert_eq!(rate[59], 2, "this minute");
        assert_eq!(rate[58], 1, "the minute before");
        assert_eq!(rate[0], 1, "an hour ago, just");
        // One from over an hour ago and one from the future are not counted.
        assert_eq!(rate.iter().sum::<u64>(), 4);
    }

    #[test]
    fn expiry_falls_into_weeks_from_now() {
        let expiring = |left: i64, standing| DeviceSummary {
            not_after: Some(NOW + left),
            ..device("acme", "p", standing)
        };
        let devices = [
            expiring(1, Standing::Onboarded),
            expiring(WEEK - 1, Standing::RenewalDue),
            expiring(WEEK, Standing::Onboarded),
            expiring(104 * WEEK, Standing::Onboarded),
            expiring(52 * WEEK, Standing::Onboarded),
            expiring(0, Standing::Expired),
            // On the CRL: not counted at all.
            expiring(WEEK, Standing::Revoked),
        ];
        let stats = compute(&devices, NOW);
        assert_eq!(stats.expiring_by_week[0], 2);
        assert_eq!(stats.expiring_by_week[1], 1);
        assert_eq!(stats.expiring_by_week[52], 1);
        assert_eq!(
            stats.expiring_by_week.len(),
            53,
            "up to the last week with any"
        );
        assert_eq!(stats.expiring_later, 1);
        assert_eq!(stats.expired, 1);
        assert_eq!(stats.expiring_by_week.iter().sum::<u64>(), 4);
        let young = compute(&[expiring(1, Standing::Onboarded)], NOW);
        assert_eq!(young.expiring_by_week.len(), MIN_EXPIRY_WEEKS);
    }
}
