//! Resident memory as the Linux kernel reports it (`/proc/self/status`).
//!
//! The peak (VmHWM) is reset once the model is loaded, so a benchmark reports what its workload
//! needs on top of the weights, the way the PyTorch reference measures it.

/// A `kB` field (`VmHWM:   1234 kB`) of a `/proc/<pid>/status` text, in bytes.
fn field_bytes(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kb: u64 = line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

fn status_bytes(field: &str) -> Option<u64> {
    field_bytes(&std::fs::read_to_string("/proc/self/status").ok()?, field)
}

/// Peak resident set size (VmHWM) since the process started or since [`reset_peak_rss`]
/// (`None` off Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM")
}

/// Current resident set size (VmRSS).
pub fn current_rss_bytes() -> Option<u64> {
    status_bytes("VmRSS")
}

/// Resets the peak to the current RSS (writes `5` to `/proc/self/clear_refs`; Linux >= 4.0).
/// Returns whether the kernel accepted it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kb_fields_as_bytes() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t    1024 kB\nVmRSSx:\t 1 kB\n";
        assert_eq!(field_bytes(status, "VmHWM"), Some(2048 * 1024));
        assert_eq!(field_bytes(status, "VmRSS"), Some(1024 * 1024));
        assert_eq!(field_bytes(status, "VmSwap"), None);
    }

    #[test]
    fn peak_is_at_least_current_in_one_snapshot() {
        // The kernel computes both fields in one read, so the peak cannot be below the current.
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let (peak, now) = (field_bytes(&status, "VmHWM").unwrap(), field_bytes(&status, "VmRSS").unwrap());
            assert!(peak >= now && now > 0, "peak {peak} now {now}");
        }
    }
}
