//! The thin loop around [`App`]: owns the terminal, waits on keys and the
//! input channel, applies, redraws. Everything it shows comes from the app.
//!
//! Channels are `std::sync::mpsc` so the caller may feed it from a tokio
//! task (`Sender::send` does not block) and read actions from a plain
//! thread (`Receiver::recv`) or `spawn_blocking`.

use std::io;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{
    self, DisableMouseCapture, EnableMouseCapture, Event as TermEvent, MouseEventKind,
};
use ratatui::crossterm::execute;

use super::{Action, App, UiInput};

/// Least time between two frames (at most ~10 redraws a second).
pub const FRAME_INTERVAL: Duration = Duration::from_millis(100);

/// How long one wait for a key lasts before the inputs are checked again.
pub const KEY_POLL: Duration = Duration::from_millis(50);

/// How long a status-line message stays when no key clears it.
pub const MESSAGE_TTL: Duration = Duration::from_secs(5);

/// Restores the terminal when dropped, also on early returns: mouse
/// reporting off, then ratatui's restore (raw mode, alternate screen).
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = execute!(io::stdout(), DisableMouseCapture);
        ratatui::restore();
    }
}

/// Turns mouse reporting off before the panic hook ratatui installed
/// (which restores the rest and prints the panic), so a panic leaves no
/// terminal that types escape codes at every click.
fn restore_mouse_on_panic() {
    let next = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = execute!(io::stdout(), DisableMouseCapture);
        next(info);
    }));
}

/// Runs the TUI until the user quits: alternate screen, raw mode and mouse
/// reporting while it runs, restored on exit and on panic (the panic hooks
/// restore the terminal before the panic message prints). Inputs from `events` are
/// applied as they come; the user's wishes go to `actions`. When `events`
/// closes the UI stays up (the last state remains readable) until the user
/// quits.
pub fn run_tui(mut app: App, events: Receiver<UiInput>, actions: Sender<Action>) -> io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let _guard = TerminalGuard;
    restore_mouse_on_panic();
    execute!(io::stdout(), EnableMouseCapture)?;
    let mut dirty = true;
    let mut last_frame: Option<Instant> = None;
    let mut inputs_open = true;
    // The message shown and since when.
    let mut message: (u64, Instant) = (0, Instant::now());
    loop {
        if app.message_seq != message.0 {
            message = (app.message_seq, Instant::now());
        } else if app.message.is_some() && message.1.elapsed() >= MESSAGE_TTL {
            app.message = None;
            dirty = true;
        }
        while inputs_open {
            match events.try_recv() {
                Ok(input) => {
                    app.apply(input);
                    dirty = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => inputs_open = false,
            }
        }
        if dirty && last_frame.is_none_or(|t| t.elapsed() >= FRAME_INTERVAL) {
            terminal.draw(|frame| app.draw(frame))?;
            last_frame = Some(Instant::now());
            dirty = false;
        }
        // crossterm reads a hung-up terminal in a loop that never ends
        // (every read answers 0 bytes), so the terminal is asked first,
        // and right before each read.
        if hung_up_within(KEY_POLL) {
            return Err(hung_up());
        }
        while !hung_up_within(Duration::ZERO) && event::poll(Duration::ZERO)? {
            let ev = event::read()?;
            // Pointer motion is reported too: only clicks and the wheel
            // count.
            if matches!(&ev, TermEvent::Mouse(m) if matches!(m.kind, MouseEventKind::Moved)) {
                continue;
            }
            if let Some(action) = on_terminal_event(&mut app, &mut terminal, ev)? {
                // A closed channel means nobody drives a run any more;
                // quitting must still work.
                let _ = actions.send(action);
            }
            dirty = true;
        }
        if app.quit {
            return Ok(());
        }
    }
}

/// Waits up to `wait` for input on the terminal (crossterm reads standard
/// input when it is a terminal, as the UI's is); whether the terminal hung
/// up (its window closed, the ssh session dropped).
fn hung_up_within(wait: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, for the duration of the call.
    let n = unsafe { libc::poll(&mut fd, 1, ms) };
    n > 0 && fd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// Why the UI left when its terminal hung up. Once a run has started, the
/// run catches SIGHUP to stop resumably, so the signal alone no longer ends
/// the process: the UI must notice on its own.
fn hung_up() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the terminal hung up")
}

/// Applies one key, click, wheel turn or resize; returns the user's wish.
fn on_terminal_event<B: ratatui::backend::Backend>(
    app: &mut App,
    terminal: &mut ratatui::Terminal<B>,
    ev: TermEvent,
) -> io::Result<Option<Action>>
where
    io::Error: From<B::Error>,
{
    Ok(match ev {
        TermEvent::Key(key) => app.handle_key(key),
        TermEvent::Mouse(mouse) => app.handle_mouse(mouse),
        TermEvent::Resize(_, _) => {
            terminal.autoresize()?;
            None
        }
        _ => None,
    })
}
