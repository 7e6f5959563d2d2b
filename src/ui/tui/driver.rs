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
        if event::poll(KEY_POLL)? {
            match event::read()? {
                TermEvent::Key(key) => {
                    if let Some(action) = app.handle_key(key) {
                        // A closed channel means nobody drives a run any
                        // more; quitting must still work.
                        let _ = actions.send(action);
                    }
                    dirty = true;
                }
                // Pointer motion is reported too: only clicks and the
                // wheel redraw.
                TermEvent::Mouse(mouse) if !matches!(mouse.kind, MouseEventKind::Moved) => {
                    if let Some(action) = app.handle_mouse(mouse) {
                        let _ = actions.send(action);
                    }
                    dirty = true;
                }
                TermEvent::Resize(_, _) => {
                    terminal.autoresize()?;
                    dirty = true;
                }
                _ => {}
            }
        }
        if app.quit {
            return Ok(());
        }
        // A terminal that hung up (its window closed, the ssh session
        // dropped) answers no size. Leave then: once a run has started, the
        // run catches SIGHUP to stop resumably, so the signal alone no
        // longer ends the process, and the hung-up terminal would keep
        // this loop spinning.
        if ratatui::crossterm::terminal::size().is_err() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the terminal hung up",
            ));
        }
    }
}
