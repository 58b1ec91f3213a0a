//! The example in docs/input-script.md parses and plays: the documentation cannot drift from
//! the parser.

use edgeplay_game::game::{GameConfig, simulate};
use edgeplay_protocol::input::{InputEvent, Key, parse_script};

#[test]
fn documented_script_parses_and_plays() {
    let doc = include_str!("../../docs/input-script.md");
    let start = doc.find("```text\n").expect("example block") + "```text\n".len();
    let len = doc[start..].find("```").expect("end of example block");
    let script = parse_script(&doc[start..start + len]).expect("documented example parses");
    assert_eq!(script.len(), 9);
    assert_eq!(
        script[0].event,
        InputEvent::Key {
            code: Key::ArrowUp,
            down: true
        }
    );
    let hashes = simulate(1, GameConfig { tick_hz: 60 }, &script, 200).expect("plays");
    assert_eq!(hashes.len(), 200);
}
