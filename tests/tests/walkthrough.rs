//! The README's walkthrough, run as written, so that the README and the programs cannot drift.
//!
//! Every ```` ```sh ```` block of the README's `## Walkthrough` section runs, in order, in one
//! bash shell started in a fresh temporary directory, so that variables, `cd` and background
//! jobs carry over from block to block as they do in a terminal. A ```` ```text ```` block right
//! after a sh block (blank lines between them are fine) is the output the README claims for it:
//! each of its lines must appear in what the terminal showed from the start of that block on
//! (its commands, and background jobs started earlier, such as `batch watch`). Background jobs
//! print when they are ready, so the check waits for the lines, up to [`EXPECTED_WITHIN`].
//!
//! How an expected line is read:
//! - it is compared with whole output lines, runs of white space counting as one space;
//! - `…` stands for any text, and the hex digits touching it are an example (DeviceIds,
//!   serials and batch ids differ on every run): `device id  53a3e949…c584` matches any
//!   DeviceId;
//! - a line that is only `…` stands for lines left out, and matches nothing.
//!
//! Substitutions, so that the commands run on a shared machine exactly as written otherwise:
//! - `cargo build` lines are not run: the test uses the binaries cargo built for the tests, and
//!   `$PWD/target/release` stands for their directory;
//! - the ports 8443 (gRPC), 9464 (metrics) and 8883 (MQTT) become free loopback ports, in the
//!   commands and in the expected output.
//!
//! To see everything the walkthrough printed (to update the README's output blocks), set
//! `OXROOT_WALKTHROUGH_TRANSCRIPT=FILE`: the test copies its transcript there.
//!
//! The shell runs in its own process group, which is killed when the test ends, however it
//! ends: nothing the walkthrough started outlives it.
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]

mod built;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const README: &str = include_str!("../../README.md");
/// The heading of the section that is run.
const SECTION: &str = "## Walkthrough";
/// The longest a block may run (onboarding three devices with debug binaries takes seconds).
const BLOCK_TIMEOUT: Duration = Duration::from_secs(240);
/// How long the expected lines of a block may take to appear after its commands returned.
const EXPECTED_WITHIN: Duration = Duration::from_secs(30);
/// The README's ports, replaced by free ones.
const PORTS: [u16; 3] = [8443, 9464, 8883];
/// The stand-in for any text in an expected line.
const ELISION: char = '…';

/// One `sh` block of the walkthrough and the output the README shows for it.
#[derive(Debug)]
struct Block {
    /// README line of the opening fence (1-based), for messages.
    line: usize,
    script: String,
    expected: Vec<Expected>,
}

/// One expected output line.
#[derive(Debug)]
struct Expected {
    line: usize,
    text: String,
    pattern: Pattern,
}

/// A fenced code block: its info string, its opening and closing lines, its body.
#[derive(Debug)]
struct Fence {
    info: String,
    start: usize,
    end: usize,
    body: Vec<String>,
}

/// The fenced blocks of the walkthrough section, paired into commands and expected output.
fn walkthrough(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end() == SECTION)
        .unwrap_or_else(|| panic!("the README has no {SECTION:?} section"));
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("## "))
        .map_or(lines.len(), |i| start + 1 + i);

    let mut fences = Vec::new();
    let mut open: Option<Fence> = None;
    for (index, line) in lines.iter().enumerate().take(end).skip(start) {
        let trimmed = line.trim_start();
        match open.take() {
            None if trimmed.starts_with("```") => {
                open = Some(Fence {
                    info: trimmed.trim_start_matches('`').trim().to_owned(),
                    start: index,
                    end: index,
                    body: Vec::new(),
                });
            }
            None => {}
            Some(mut fence) if trimmed.starts_with("```") => {
                fence.end = index;
                fences.push(fence);
            }
            Some(mut fence) => {
                fence.body.push((*line).to_owned());
                open = Some(fence);
            }
        }
    }
    assert!(open.is_none(), "an unclosed code fence in {SECTION:?}");

    let mut blocks: Vec<Block> = Vec::new();
    let mut previous: Option<&Fence> = None;
    for fence in &fences {
        match fence.info.as_str() {
            "sh" => blocks.push(Block {
                line: fence.start + 1,
                script: fence.body.join("\n") + "\n",
                expected: Vec::new(),
            }),
            "text" => {
                // Output belongs to the sh block just above it, with nothing but blank lines
                // in between; any other text block (a diagram) is not output.
                let follows_sh = previous.is_some_and(|p| {
                    p.info == "sh"
                        && lines[p.end + 1..fence.start]
                            .iter()
                            .all(|l| l.trim().is_empty())
                });
                if follows_sh {
                    let block = blocks.last_mut().expect("a sh block precedes");
                    for (offset, text) in fence.body.iter().enumerate() {
                        if let Some(pattern) = Pattern::new(text) {
                            block.expected.push(Expected {
                                line: fence.start + 2 + offset,
                                text: text.clone(),
                                pattern,
                            });
                        }
                    }
                }
            }
            _ => {}
        }
        previous = Some(fence);
    }
    blocks
}

/// An expected line: literal parts with "anything" between them.
#[derive(Debug, PartialEq, Eq)]
struct Pattern {
    parts: Vec<String>,
}

fn is_example_digit(c: char) -> bool {
    c.is_ascii_digit() || ('a'..='f').contains(&c)
}

/// Runs of white space as one space, without leading or trailing space.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Pattern {
    /// `None` for lines that match nothing: blank lines and bare elisions.
    fn new(text: &str) -> Option<Self> {
        let text = squeeze(text);
        if text.chars().all(|c| c == ELISION) {
            return None;
        }
        let pieces: Vec<&str> = text.split(ELISION).collect();
        let last = pieces.len() - 1;
        let parts = pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let mut piece = *piece;
                if i > 0 {
                    piece = piece.trim_start_matches(is_example_digit);
                }
                if i < last {
                    piece = piece.trim_end_matches(is_example_digit);
                }
                piece.to_owned()
            })
            .collect();
        Some(Self { parts })
    }

    fn matches(&self, line: &str) -> bool {
        let line = squeeze(line);
        let (first, rest) = self.parts.split_first().expect("at least one part");
        let Some((last, middle)) = rest.split_last() else {
            return line == *first;
        };
        let Some(mut tail) = line.strip_prefix(first.as_str()) else {
            return false;
        };
        // Leftmost matches of the middle parts leave the most room for the rest.
        for part in middle {
            let Some(at) = tail.find(part.as_str()) else {
                return false;
            };
            tail = &tail[at + part.len()..];
        }
        tail.ends_with(last.as_str())
    }
}

/// The expected lines not found in `output`, each matched to a line of its own. Lines are
/// looked for after the previous match first (output order), then anywhere: background jobs
/// interleave with the commands.
fn missing<'a>(expected: &'a [Expected], output: &str) -> Vec<&'a Expected> {
    let lines: Vec<&str> = output.lines().collect();
    let mut used = vec![false; lines.len()];
    let mut cursor = 0;
    let mut missing = Vec::new();
    for want in expected {
        let found = (cursor..lines.len())
            .chain(0..cursor)
            .find(|&i| !used[i] && want.pattern.matches(lines[i]));
        match found {
            Some(i) => {
                used[i] = true;
                cursor = i + 1;
            }
            None => missing.push(want),
        }
    }
    missing
}

/// Replaces the README's ports by `ports[i]` where they stand as whole numbers.
fn substitute_ports(text: &str, ports: &BTreeMap<u16, u16>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    let bytes = text.as_bytes();
    while let Some((start, c)) = chars.next() {
        if !c.is_ascii_digit() {
            out.push(c);
            continue;
        }
        let mut end = start + 1;
        while let Some(&(i, d)) = chars.peek() {
            if !d.is_ascii_digit() {
                break;
            }
            end = i + 1;
            chars.next();
        }
        let number = &text[start..end];
        let alone = (start == 0 || !bytes[start - 1].is_ascii_alphanumeric())
            && (end == text.len() || !bytes[end].is_ascii_alphanumeric());
        match number.parse::<u16>().ok().and_then(|n| ports.get(&n)) {
            Some(port) if alone => out.push_str(&port.to_string()),
            _ => out.push_str(number),
        }
    }
    out
}

/// The script a README block becomes here.
fn adapt_script(script: &str, bin_dir: &Path, ports: &BTreeMap<u16, u16>) -> String {
    let script = script
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("cargo build") {
                format!(": not run by the test, which uses the binaries cargo built for it: {line}")
            } else {
                line.replace("$PWD/target/release", &bin_dir.display().to_string())
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    substitute_ports(&script, ports) + "\n"
}

/// A bash shell in its own process group, fed one block at a time.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    /// Lines the shell writes to its original stdout: only our "done N" markers.
    markers: Receiver<String>,
}

impl Shell {
    fn start(dir: &Path, transcript: &Path) -> Self {
        let mut command = Command::new("bash");
        command
            .args(["--noprofile", "--norc"])
            .current_dir(dir)
            .env("TMPDIR", dir.join("tmp"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // The walkthrough configures everything itself: nothing from the caller's environment
        // may change what the tools do or print.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OXROOT_") {
                command.env_remove(&key);
            }
        }
        command.env_remove("RUST_LOG");
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().expect("bash starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, markers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut shell = Self {
            child,
            stdin,
            markers,
        };
        // fd 3 keeps the marker channel; everything the blocks print goes to the transcript,
        // as one terminal would show it. A failing command stops the walkthrough and says which.
        shell.send(&format!(
            "set -eo pipefail\n\
             exec 3>&1 >>'{}' 2>&1\n\
             trap 'echo \"walkthrough: exit status $? from: $BASH_COMMAND\" >&2' ERR\n",
            transcript.display()
        ));
        shell
    }

    fn send(&mut self, text: &str) {
        self.stdin
            .write_all(text.as_bytes())
            .and_then(|()| self.stdin.flush())
            .expect("the shell takes input");
    }

    /// Runs a block file; `Err` says why it did not finish.
    fn run(&mut self, index: usize, file: &Path) -> Result<(), String> {
        // The block must not read the shell's own input, and its jobs must not hold fd 3.
        self.send(&format!(
            "source '{}' </dev/null 3>&-\necho 'done {index}' >&3\n",
            file.display()
        ));
        let deadline = Instant::now() + BLOCK_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.markers.recv_timeout(left) {
                Ok(line) if line == format!("done {index}") => return Ok(()),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("it did not finish within {BLOCK_TIMEOUT:?}"));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!("the shell stopped ({status})"));
                }
            }
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // The whole process group: the shell, the service, the broker, any watch still running.
        let group = self.child.id();
        let signal = |name: &str| {
            let _ = Command::new("sh")
                .args(["-c", &format!("kill -s {name} -- -{group} 2>/dev/null")])
                .status();
        };
        signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Stragglers that ignore SIGTERM, and group members that outlive the shell.
        std::thread::sleep(Duration::from_millis(200));
        signal("KILL");
        let _ = self.child.wait();
    }
}

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("oxroot-walkthrough-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(path.join("tmp")).expect("a temporary directory");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Free loopback ports for the README's ports, held until all are chosen.
fn free_ports() -> BTreeMap<u16, u16> {
    let listeners: Vec<_> = PORTS
        .iter()
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    PORTS
        .iter()
        .zip(&listeners)
        .map(|(&readme, listener)| (readme, listener.local_addr().expect("bound").port()))
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let blocks = walkthrough(README);
    assert!(
        blocks.len() >= 7 && blocks.iter().filter(|b| !b.expected.is_empty()).count() >= 7,
        "the walkthrough lost its commands or their output: {blocks:#?}"
    );
    let bin_dir = built::bin_dir();
    let dir = TempDir::new();
    let transcript = dir.0.join("transcript");
    std::fs::write(&transcript, "").expect("transcript");
    let ports = free_ports();
    eprintln!("walkthrough in {} with ports {ports:?}", dir.0.display());

    let mut shell = Shell::start(&dir.0, &transcript);
    for (index, block) in blocks.iter().enumerate() {
        let file = dir.0.join(format!("block-{index}.sh"));
        let script = adapt_script(&block.script, &bin_dir, &ports);
        std::fs::write(&file, &script).expect("block file");
        let from = std::fs::metadata(&transcript).expect("transcript").len() as usize;
        let output = || {
            let all = std::fs::read(&transcript).expect("transcript");
            String::from_utf8_lossy(&all[from.min(all.len())..]).into_owned()
        };
        let fail = |why: &str, output: &str| -> ! {
            panic!(
                "README line {}: {why}\n--- the block, as run ---\n{script}--- what it printed \
                 (last 150 lines) ---\n{}\n",
                block.line,
                tail(output, 150)
            )
        };

        if let Err(why) = shell.run(index, &file) {
            fail(&format!("the block failed: {why}"), &output());
        }
        let expected: Vec<Expected> = block
            .expected
            .iter()
            .map(|e| Expected {
                line: e.line,
                text: substitute_ports(&e.text, &ports),
                pattern: Pattern::new(&substitute_ports(&e.text, &ports))
                    .expect("a pattern stays a pattern"),
            })
            .collect();
        let deadline = Instant::now() + EXPECTED_WITHIN;
        loop {
            let printed = output();
            let missing = missing(&expected, &printed);
            if missing.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let list: Vec<String> = missing
                    .iter()
                    .map(|e| format!("  README line {}: {}", e.line, e.text.trim()))
                    .collect();
                fail(
                    &format!(
                        "the output the README shows is not what the commands print; missing \
                         after {EXPECTED_WITHIN:?}:\n{}",
                        list.join("\n")
                    ),
                    &printed,
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "ok: README line {} ({} expected lines)",
            block.line,
            expected.len()
        );
    }
    drop(shell);
    if let Some(copy) = std::env::var_os("OXROOT_WALKTHROUGH_TRANSCRIPT") {
        std::fs::copy(&transcript, &copy).expect("copy of the transcript");
    }
}

/// The README's main command, `cargo run --release -p enroll-service -- demo`: cargo must be
/// able to pick the binary (the package has two), and the demo must run. The release build is
/// not repeated here; the demo runs from the binary cargo built for the tests.
#[test]
fn the_readme_main_command_runs() {
    let section = README
        .split("## The two commands")
        .nth(1)
        .expect("the README has a section with the two commands");
    let main = section
        .lines()
        .find(|line| line.starts_with("cargo run"))
        .expect("the main command");
    let (cargo_part, program_args) = main.split_once(" -- ").expect("cargo run … -- ARGS");
    let package = cargo_part
        .split_whitespace()
        .skip_while(|word| *word != "-p")
        .nth(1)
        .expect("cargo run -p PACKAGE");

    let metadata = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(built::repo_root())
        .output()
        .expect("cargo metadata runs");
    assert!(metadata.status.success(), "{metadata:?}");
    let metadata: serde_json::Value =
        serde_json::from_slice(&metadata.stdout).expect("cargo metadata prints JSON");
    let manifest = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("no package {package}"));
    let binaries = manifest["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .count();
    let binary = if let Some(name) = manifest["default_run"].as_str() {
        name.to_owned()
    } else {
        assert_eq!(
            binaries, 1,
            "`{main}`: {package} has {binaries} binaries and no default-run"
        );
        package.to_owned()
    };

    let output = Command::new(built::bin_dir().join(&binary))
        .args(program_args.split_whitespace())
        .args(["--devices", "5"])
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "`{main}` failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let onboarded = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("onboarded"))
        .map(str::trim);
    assert_eq!(onboarded, Some("5"), "{stdout}");
}

mod reading_the_readme {
    use super::*;

    #[test]
    fn elisions_and_example_hex() {
        let p = Pattern::new("  device id     53a3e949…c584").expect("a pattern");
        assert_eq!(p.parts, ["device id ", ""]);
        assert!(p.matches("  device id            1843376b56cfff4bfa6d0031"));
        assert!(!p.matches("device  ids 1843"));
        let p = Pattern::new("…  53a3…  onboarded  serial 5bac… slot 1  ref 6cc4…").expect("p");
        assert!(p.matches(
            "2026-11-21T12:23:23.86Z  da28bf  onboarded  serial 4fdd57 slot 1  ref 54cbec"
        ));
        assert!(!p.matches("2026-11-21T12:23:23.86Z  da28bf  onboarded  serial 4fdd57 slot 2"));
        assert!(Pattern::new("…").is_none());
        assert!(Pattern::new("   ").is_none());
        // A literal line matches whole lines only.
        let p = Pattern::new("registered").expect("p");
        assert!(p.matches("registered  "));
        assert!(!p.matches("newly registered"));
    }

    #[test]
    fn expected_lines_each_need_a_line_of_their_own() {
        let expected: Vec<Expected> = ["onboarded", "onboarded", "… settled: 3 onboarded"]
            .iter()
            .enumerate()
            .map(|(line, text)| Expected {
                line,
                text: (*text).to_owned(),
                pattern: Pattern::new(text).expect("p"),
            })
            .collect();
        assert!(missing(&expected, "x settled: 3 onboarded\nonboarded\nonboarded\n").is_empty());
        assert_eq!(
            missing(&expected, "onboarded\nbatch settled: 3 onboarded\n").len(),
            1
        );
    }

    #[test]
    fn ports_are_replaced_where_they_stand_alone() {
        let ports = BTreeMap::from([(8443, 41000), (8883, 41001)]);
        assert_eq!(
            substitute_ports("127.0.0.1:8443 listener 8883 a8883 88830 8443", &ports),
            "127.0.0.1:41000 listener 41001 a8883 88830 41000"
        );
    }

    #[test]
    fn output_blocks_belong_to_the_sh_block_above() {
        let readme = "# x\n## Walkthrough\n```text\ndiagram\n```\n```sh\necho hi\n```\n\n\
                      ```text\nhi\n```\nprose\n```text\nnot output\n```\n## Next\n```sh\nno\n```\n";
        let blocks = walkthrough(readme);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].script, "echo hi\n");
        assert_eq!(blocks[0].line, 6);
        let texts: Vec<&str> = blocks[0].expected.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["hi"]);
        assert_eq!(blocks[0].expected[0].line, 11);
    }
}
