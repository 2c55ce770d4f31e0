//! The `arbiter status` table.

use crate::protocol::Flag;

/// One line per vm: vm id, epoch, owner, time granted (UTC), under a header.
pub fn format_table(flags: &[Flag]) -> String {
    let rows: Vec<[String; 4]> = flags
        .iter()
        .map(|f| {
            [
                f.vm.clone(),
                f.epoch.to_string(),
                f.owner.clone(),
                format_utc(f.granted_at_unix_ms),
            ]
        })
        .collect();
    let header = ["VM", "EPOCH", "OWNER", "GRANTED (UTC)"].map(String::from);
    let mut width = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:<w0$}  {:>w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_utc(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn table() {
        let flags = vec![
            Flag {
                vm: "ft-vm".into(),
                epoch: 12,
                owner: "host-a".into(),
                granted_at_unix_ms: 0,
            },
            Flag {
                vm: "b".into(),
                epoch: 3,
                owner: "h".into(),
                granted_at_unix_ms: 1000,
            },
        ];
        assert_eq!(
            format_table(&flags),
            "VM     EPOCH  OWNER   GRANTED (UTC)\n\
             ft-vm     12  host-a  1970-01-01T00:00:00.000Z\n\
             b          3  h       1970-01-01T00:00:01.000Z\n"
        );
        assert_eq!(format_table(&[]), "VM  EPOCH  OWNER  GRANTED (UTC)\n");
    }
}
