//! Bar charts as SVG, drawn on the server: no script, and readable with JavaScript off.
//!
//! A chart is plain `rect` and `text` elements with classes the stylesheet colours (the CSP
//! allows no inline style). Every label passes through maud like any other text, and each bar
//! carries a `title` with its exact figure for a tooltip and for screen readers.

use maud::{Markup, html};

/// Drawing size in SVG units; the stylesheet scales the chart to the page width.
const WIDTH: u32 = 720;
const HEIGHT: u32 = 180;
/// Room for the axis labels.
const LEFT: u32 = 44;
/// Room for the last bar's label, centred under it.
const RIGHT: u32 = 24;
const BOTTOM: u32 = 22;
const TOP: u32 = 8;

/// One bar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bar {
    /// Shown under the bar when its position is a multiple of the chart's label step.
    pub(crate) label: String,
    pub(crate) value: u64,
    /// The tooltip: what the bar counts, with its figure.
    pub(crate) title: String,
    /// Extra CSS class (e.g. `warn` for expired certificates).
    pub(crate) class: &'static str,
}

/// A bar chart of `bars`, labelled every `label_every` bars, described by `caption`.
pub(crate) fn bar_chart(caption: &str, bars: &[Bar], label_every: usize) -> Markup {
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1);
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let count = u32::try_from(bars.len()).unwrap_or(u32::MAX).max(1);
    let slot = f64::from(plot_width) / f64::from(count);
    let bar_width = (slot * 0.8).max(1.0);
    let label_every = label_every.max(1);
    let baseline = TOP + plot_height;
    html! {
        figure.chart {
            svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {WIDTH} {HEIGHT}"))
                role="img" aria-label=(caption) {
                title { (caption) }
                line.axis x1=(LEFT) y1=(baseline) x2=(WIDTH - RIGHT) y2=(baseline) {}
                text.tick x=(LEFT - 4) y=(TOP + 10) text-anchor="end" { (max) }
                text.tick x=(LEFT - 4) y=(baseline) text-anchor="end" { "0" }
                @for (i, bar) in bars.iter().enumerate() {
                    @let height = scaled(bar.value, max, plot_height);
                    @let x = f64::from(LEFT) + slot * i as f64 + (slot - bar_width) / 2.0;
                    rect class={ "bar " (bar.class) } x=(fmt(x)) y=(baseline - height)
                        width=(fmt(bar_width)) height=(height) data-value=(bar.value) {
                        title { (bar.title) }
                    }
                    @if labelled(i, bars.len(), label_every) {
                        text.tick x=(fmt(x + bar_width / 2.0)) y=(HEIGHT - 6) text-anchor="middle" {
                            (bar.label)
                        }
                    }
                }
            }
            figcaption { (caption) }
        }
    }
}

/// The last bar is labelled (it is the newest minute, or "later"), and every `every`th bar
/// from the first, except those too close to the last for both labels to fit.
fn labelled(index: usize, count: usize, every: usize) -> bool {
    let last = count.saturating_sub(1);
    index == last || (index.is_multiple_of(every) && (index == 0 || last - index >= every))
}

/// The height of a bar of `value` when `max` fills `full`; a non-zero value is at least 1 unit
/// tall, so that a single device shows.
fn scaled(value: u64, max: u64, full: u32) -> u32 {
    if value == 0 {
        return 0;
    }
    let height = u128::from(value) * u128::from(full) / u128::from(max.max(1));
    u32::try_from(height).unwrap_or(full).clamp(1, full)
}

/// A coordinate with one decimal, as SVG reads it.
fn fmt(value: f64) -> String {
    format!("{value:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(label: &str, value: u64) -> Bar {
        Bar {
            label: label.into(),
            value,
            title: format!("{label}: {value}"),
            class: "",
        }
    }

    #[test]
    fn bars_scale_to_the_largest_and_small_ones_still_show() {
        assert_eq!(scaled(0, 10, 150), 0);
        assert_eq!(scaled(10, 10, 150), 150);
        assert_eq!(scaled(5, 10, 150), 75);
        assert_eq!(scaled(1, 1_000_000, 150), 1);
        assert_eq!(scaled(u64::MAX, u64::MAX, 150), 150);
    }

    #[test]
    fn a_chart_has_one_rect_per_bar_and_escaped_labels() {
        let svg = bar_chart(
            "Expiry <by week>",
            &[bar("<b>", 3), bar("w1", 0), bar("w2", 6)],
            2,
        )
        .into_string();
        assert_eq!(svg.matches("<rect ").count(), 3, "{svg}");
        assert!(svg.contains("data-value=\"6\""), "{svg}");
        assert!(svg.contains("&lt;b&gt;"), "{svg}");
        assert!(!svg.contains("<b>"), "{svg}");
        assert!(svg.contains("Expiry &lt;by week&gt;"), "{svg}");
        // Labels every second bar and the last: "<b>" and "w2", not "w1".
        assert!(!svg.contains(">w1<"), "{svg}");
        assert!(svg.contains(">w2<"), "{svg}");
        assert!(
            !svg.contains("style="),
            "no inline style under the CSP: {svg}"
        );
    }

    #[test]
    fn the_last_bar_is_labelled_when_there_is_room() {
        assert!(labelled(0, 10, 4));
        assert!(!labelled(1, 10, 4));
        assert!(labelled(4, 10, 4));
        assert!(labelled(9, 10, 4), "the last bar");
        assert!(!labelled(8, 10, 4), "a multiple too close to the last");
        assert!(labelled(0, 1, 4), "a single bar");
    }

    #[test]
    fn an_empty_chart_draws_its_axis() {
        let svg = bar_chart("nothing", &[], 1).into_string();
        assert!(svg.contains("<line"), "{svg}");
        assert!(!svg.contains("<rect"), "{svg}");
    }
}
