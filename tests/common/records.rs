//! Records as an office writes them: JSON rows of a monthly report, about
//! 400 bytes each, alike in shape and different in their figures, as the
//! field's are. Shared by `tests/links.rs` and `benches/links.rs`.

const INDICATORS: [&str; 6] = [
    "beneficiaries_reached",
    "households_visited",
    "trainings_held",
    "kits_distributed",
    "referrals_made",
    "volunteers_active",
];
const PROGRAMMES: [&str; 4] = ["health", "water_sanitation", "education", "livelihoods"];
const NOTES: [&str; 5] = [
    "Figures confirmed by the district coordinator.",
    "Two sites closed for a week after the floods; counts estimated.",
    "Includes the mobile team's outreach in the northern villages.",
    "Late submission: the line was down for most of the month.",
    "No change from the previous month's method.",
];

/// A small deterministic generator, so every run writes the same bytes.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Row `i` of a region's report, as JSON.
pub fn report_row(region: &str, i: u64) -> String {
    let r = |k: u64| mix(i * 16 + k);
    let month = 1 + i % 12;
    let mut figures = String::new();
    for (k, name) in INDICATORS.iter().enumerate() {
        let sep = if k == 0 { "" } else { "," };
        figures.push_str(&format!("{sep}\"{name}\":{}", r(k as u64) % 5000));
    }
    format!(
        "{{\"region\":\"{region}\",\"site\":\"site-{:03}\",\"district\":\"district-{:02}\",\
         \"programme\":\"{}\",\"period\":\"2026-{month:02}\",\"figures\":{{{figures}}},\
         \"currency\":\"USD\",\"spent\":{}.{:02},\"status\":\"submitted\",\
         \"submitted_by\":\"officer-{:02}\",\"revision\":{},\"note\":\"{}\"}}",
        r(7) % 400,
        r(11) % 60,
        PROGRAMMES[(r(12) % PROGRAMMES.len() as u64) as usize],
        r(13) % 20_000,
        r(14) % 100,
        r(8) % 40,
        1 + r(9) % 3,
        NOTES[(r(10) % NOTES.len() as u64) as usize],
    )
}

/// `len` bytes that do not compress (a photo, a scanned form): what a
/// test of the line's own speed sends, so compression cannot hide it.
pub fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    (0..len.div_ceil(8) as u64)
        .flat_map(|i| mix(seed.wrapping_mul(0x9e37_79b9) ^ i).to_le_bytes())
        .take(len)
        .collect()
}
