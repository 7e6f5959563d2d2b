//! Large buffers on huge pages. A fresh allocation is faulted in one 4 KiB
//! page at a time as it is first written, each fault a trip through the
//! kernel (in a virtual machine, through the hypervisor too); on 2 MiB
//! pages a buffer takes 512 times fewer faults, and a random read of it
//! misses the TLB far less. Advice only: where the kernel declines, the
//! memory is the same, made as before.

use std::io::Read;
use std::path::Path;

/// Buffers smaller than this are made as usual.
const ADVISED_BYTES: usize = 4 << 20;

/// Blocks up to this size come from the heap under [`keep_freed_memory`].
const KEEP_MMAP_BYTES: i32 = 32 << 20;

/// Asks the kernel to back the memory of `len` bytes at `at` (an allocation
/// of this process) with huge pages where it can (`MADV_HUGEPAGE`: the
/// whole 2 MiB pages inside it). Only advice: nothing changes where it is
/// not taken.
pub fn huge_pages(at: *const u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (at as usize).next_multiple_of(HUGE);
        let end = (at as usize + len) / HUGE * HUGE;
        if end > start {
            // SAFETY: madvise with MADV_HUGEPAGE on whole pages inside an
            // allocation this process owns changes no contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
}

/// A whole file, as `std::fs::read` reads it, into a buffer on huge pages
/// when it is large (a 25 MB model in a fresh process: 14.6-20.0 ms -> 6.2-7.6 ms,
/// docs/performance.md).
pub fn read_whole(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata().map_or(0, |m| m.len() as usize);
    let mut buf = Vec::with_capacity(len);
    if len >= ADVISED_BYTES {
        huge_pages(buf.as_ptr(), buf.capacity());
    }
    file.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Asks the C allocator (glibc) to keep the memory this process frees for
/// its next allocations instead of handing it back to the system at once:
/// memory returned and asked for again comes back as fresh pages, each
/// faulted in and zeroed. Blocks up to 32 MiB then come from the heap, and
/// the heap gives back only a free top above `trim_bytes`; the peak memory
/// is unchanged. Process-wide: for a process whose every allocation is its
/// own work (a worker, a coordinator, `herd store export`), called before it
/// starts other threads.
pub fn keep_freed_memory(trim_bytes: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation thresholds.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP_MMAP_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim_bytes);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = trim_bytes;
}
