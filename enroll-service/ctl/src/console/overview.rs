//! `GET /`: the fleet overview. Devices by standing, per owner and per policy; onboardings per
//! minute over the last hour; certificate expiry by week. All of it from the fleet index, whose
//! age the page states.

use axum::extract::State;
use maud::{Markup, html};

use super::chart::{Bar, bar_chart};
use super::fleet_index::Fleet;
use super::page::{PageError, Section, page, shown, when_at};
use super::stats::{Counts, RATE_MINUTES, Standing};
use super::{Console, SharedConsole};
use crate::output::span;

/// `GET /`.
pub(crate) async fn show(State(console): State<SharedConsole>) -> Result<Markup, PageError> {
    let fleet = console.fleet.fleet().await?;
    Ok(page(
        &console,
        Section::Fleet,
        "Fleet overview",
        &body(&console, &fleet),
    ))
}

fn body(console: &Console, fleet: &Fleet) -> Markup {
    let stats = fleet.stats();
    html! {
        (freshness(console, fleet))
        section.tiles aria-label="Devices by standing" {
            @for standing in Standing::ALL {
                a.tile href={ "/devices?filter=" (standing.slug()) } data-standing=(standing.slug()) {
                    span.figure { (stats.totals.get(standing)) }
                    span.label { (standing.label()) }
                }
            }
            a.tile.total href="/devices" {
                span.figure { (stats.totals.total()) }
                span.label { "devices in all" }
            }
        }
        section {
            h2 { "Onboardings per minute, last hour" }
            (bar_chart(
                "Devices onboarded in each of the last 60 minutes",
                &rate_bars(&stats.onboardings_per_minute),
                10,
            ))
        }
        section {
            h2 { "Certificate expiry by week" }
            (bar_chart(
                "Current certificates by the week they expire in",
                &expiry_bars(stats.expired, &stats.expiring_by_week, stats.expiring_later),
                (stats.expiring_by_week.len() / 12).max(1),
            ))
        }
        section {
            h2 { "Per owner" }
            (counts_table("Owner", stats.by_owner.iter().map(|(owner, counts)| (html! { (shown(owner)) }, counts))))
        }
        section {
            h2 { "Per policy" }
            (counts_table("Policy", stats.by_policy.iter().map(|((owner, policy), counts)| {
                (policy_cell(owner, policy), counts)
            })))
        }
    }
}

/// How old the figures are, and whether the last refresh failed.
pub(crate) fn freshness(console: &Console, fleet: &Fleet) -> Markup {
    html! {
        p.freshness {
            "Devices as of " time { (when_at(fleet.taken_at)) }
            " (read in " (span_ms(fleet.took)) "; read again in the background when older than "
            (span(console.fleet.refresh_after())) ")."
            @if let Some(error) = console.fleet.last_error() {
                " " strong.warn { "The last refresh failed: " (shown(&error)) }
            }
        }
    }
}

/// A duration to the millisecond.
fn span_ms(duration: std::time::Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}

fn policy_cell(owner: &str, policy: &str) -> Markup {
    html! {
        @if policy.is_empty() {
            span.muted { "no policy" }
        } @else {
            (shown(policy))
        }
        " " span.muted { "(" (shown(owner)) ")" }
    }
}

/// One row per group, one column per standing.
fn counts_table<'a>(first: &str, rows: impl Iterator<Item = (Markup, &'a Counts)>) -> Markup {
    html! {
        table.counts {
            thead { tr {
                th { (first) }
                @for standing in Standing::ALL { th.num { (standing.label()) } }
                th.num { "total" }
            } }
            tbody {
                @for (name, counts) in rows {
                    tr {
                        td { (name) }
                        @for standing in Standing::ALL { td.num { (counts.get(standing)) } }
                        td.num { (counts.total()) }
                    }
                }
            }
        }
    }
}

/// Bars of the onboarding rate, oldest minute first.
fn rate_bars(per_minute: &[u64]) -> Vec<Bar> {
    per_minute
        .iter()
        .enumerate()
        .map(|(i, &value)| {
            let ago = RATE_MINUTES - i;
            Bar {
                label: format!("-{ago}m"),
                value,
                title: format!("{value} onboarded {} to {} minutes ago", ago, ago - 1),
                class: "",
            }
        })
        .collect()
}

/// Bars of the expiry histogram: already expired, then week by week, then later.
fn expiry_bars(expired: u64, by_week: &[u64], later: u64) -> Vec<Bar> {
    let mut bars = vec![Bar {
        label: "expired".into(),
        value: expired,
        title: format!("{expired} already expired"),
        class: "warn",
    }];
    bars.extend(by_week.iter().enumerate().map(|(week, &value)| Bar {
        label: format!("w{week}"),
        value,
        title: format!("{value} expire in week {week} from now"),
        class: "",
    }));
    let weeks = by_week.len();
    bars.push(Bar {
        label: "later".into(),
        value: later,
        title: format!("{later} expire later than {weeks} weeks from now"),
        class: "",
    });
    bars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_bars_run_from_an_hour_ago_to_now() {
        let mut minutes = vec![0; RATE_MINUTES];
        minutes[59] = 4;
        let bars = rate_bars(&minutes);
        assert_eq!(bars.len(), 60);
        assert_eq!(bars[0].label, "-60m");
        assert_eq!(bars[59].label, "-1m");
        assert_eq!(bars[59].title, "4 onboarded 1 to 0 minutes ago");
    }

    #[test]
    fn expiry_bars_start_with_the_expired_and_end_with_later() {
        let bars = expiry_bars(2, &[1, 0, 3], 9);
        let labels: Vec<_> = bars.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(labels, ["expired", "w0", "w1", "w2", "later"]);
        assert_eq!(bars[0].class, "warn");
        assert_eq!(bars[4].value, 9);
    }
}
