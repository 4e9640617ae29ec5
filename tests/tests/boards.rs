//! Boards end to end (protocol-spec.md §17), real binaries on 127.0.0.1: seekers who
//! never saw an invite find a talk on a board, ask, are admitted or declined, the talk
//! opens at quorum, messages flow, and the close erases everything — checked by a raw
//! byte scan of the relay's and every home's data for the phrase, title, notes and
//! aliases. And the bad inputs: a wrong phrase, a forged or replayed request, an admit
//! for an unknown request, asking twice.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use nook_e2e::{Nook, Relay, all_bytes, contains, text};
use serde_json::Value;

const PHRASE: &str = "Procurement   Berlin";
const TITLE: &str = "Tender review circle";
const ABOUT: &str = "Two people who read public tenders weekly";

fn browse(n: &Nook, relay: &Relay, phrase: &str) -> Vec<Value> {
    n.ok(&[
        "--json",
        "browse",
        "--relay",
        &relay.address,
        "--board",
        phrase,
    ])
    .json_lines()
}

fn requests(owner: &Nook, talk: &str) -> Vec<Value> {
    owner.ok(&["--json", "requests", talk]).json_lines()
}

/// The one ask of `n`, after `nook asks`.
fn asks(n: &Nook) -> Vec<Value> {
    n.ok(&["--json", "asks"]).json_lines()
}

#[test]
fn three_seekers_find_a_talk_two_are_admitted_one_declined_and_close_erases_it_all() {
    let relay = Relay::start();
    let owner = Nook::new();
    let created = owner
        .ok(&[
            "--json",
            "new",
            "--relay",
            &relay.address,
            "--seats",
            "3",
            "--quorum",
            "3",
            "--alias",
            "owner-ann",
        ])
        .json();
    let talk = text(&created["talk"]);
    let posted = owner
        .ok(&[
            "--json",
            "post",
            &talk,
            "--board",
            PHRASE,
            "--title",
            TITLE,
            "--about",
            ABOUT,
            "--tags",
            "berlin,tenders",
            "--until",
            "1h",
        ])
        .json();
    assert_eq!(posted["listings"].as_array().unwrap().len(), 1);

    // Found by people typing the phrase their own way; nothing about the owner.
    let (kim, lou, max) = (Nook::new(), Nook::new(), Nook::new());
    let found = browse(&kim, &relay, "procurement berlin");
    assert_eq!(found.len(), 1, "{found:?}");
    let l = &found[0];
    assert_eq!(l["title"], TITLE);
    assert_eq!(l["about"], ABOUT);
    assert_eq!(l["tags"], serde_json::json!(["berlin", "tenders"]));
    assert_eq!(
        (l["members"].as_u64(), l["seats"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(l["quorum"], 3);
    assert!(!l.to_string().contains("owner-ann"));
    let listing = text(&l["listing"]);
    // A tag filter that matches nothing shows nothing.
    let none = kim.ok(&[
        "--json",
        "browse",
        "--relay",
        &relay.address,
        "--board",
        PHRASE,
        "--tag",
        "munich",
    ]);
    assert!(none.json_lines().is_empty());

    // Three asks, each under its own alias and note.
    let seekers = [
        (&kim, "kim-seeker", "note from kim"),
        (&lou, "lou-seeker", "note from lou"),
        (&max, "max-seeker", "note from max"),
    ];
    let mut ids = Vec::new();
    for (n, alias, note) in seekers {
        let a = n
            .ok(&["--json", "ask", &listing, "--note", note, "--alias", alias])
            .json();
        assert_eq!(a["state"], "waiting");
        // Asking twice is the same ask.
        let again = n.ok(&["--json", "ask", &listing, "--note", note]).json();
        assert_eq!(again["request"], a["request"]);
        ids.push(text(&a["request"]));
    }

    // The owner's `read` shows each request once, as it shows any event.
    let read = owner.ok(&["--json", "read", &talk]).json_lines();
    let mut asked: Vec<(String, String, String)> = read
        .iter()
        .filter(|v| v["type"] == "seat_request")
        .map(|v| (text(&v["alias"]), text(&v["note"]), text(&v["request"])))
        .collect();
    asked.sort();
    let mut want: Vec<(String, String, String)> = seekers
        .iter()
        .zip(&ids)
        .map(|((_, alias, note), id)| (alias.to_string(), note.to_string(), id.clone()))
        .collect();
    want.sort();
    assert_eq!(asked, want, "{read:?}");
    let human = owner.ok(&["read", &talk]).stdout;
    assert!(
        human.contains(&format!(
            "* kim-seeker asks for a seat: \"note from kim\" — nook admit {talk} {}\n",
            &ids[0][..8]
        )),
        "{human}"
    );
    let again = owner.ok(&["--json", "read", "--new", &talk]).json_lines();
    assert!(
        !again.iter().any(|v| v["type"] == "seat_request"),
        "noted once: {again:?}"
    );

    // The owner sees three requests, with aliases and notes.
    let reqs = requests(&owner, &talk);
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    let id_of = |alias: &str| {
        text(
            &reqs
                .iter()
                .find(|r| r["alias"] == alias)
                .unwrap_or_else(|| panic!("{alias} in {reqs:?}"))["request"],
        )
    };
    assert!(reqs.iter().any(|r| r["note"] == "note from lou"));
    // An admit for an unknown request is an error with its own kind.
    let unknown = owner.run(&["--json", "admit", &talk, "ffffffffffff"]);
    assert_eq!(unknown.code, 5, "{unknown:?}");
    assert!(
        unknown.stderr.contains("request_unknown"),
        "{}",
        unknown.stderr
    );

    let unused = |n: &Nook| n.ok(&["--json", "invites", &talk]).json()["invites"].clone();
    assert_eq!(unused(&owner).as_array().map(Vec::len), Some(2));
    owner.ok(&["admit", &talk, &id_of("kim-seeker")]);
    // kim's invite is kim's now: not listed for the owner to pass on again, even
    // before kim takes the seat.
    let left = unused(&owner);
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
    owner.ok(&["admit", &talk, &id_of("lou-seeker")]);
    assert_eq!(unused(&owner), serde_json::json!([]));
    owner.ok(&["decline", &talk, &id_of("max-seeker")]);
    assert!(
        requests(&owner, &talk).is_empty(),
        "answered ones are no longer waiting"
    );

    // At next contact: admitted ones take their seat, the declined one is told.
    let k = asks(&kim);
    assert_eq!(k[0]["state"], "joined", "{k:?}");
    assert_eq!(k[0]["talk"], talk.as_str());
    let m = asks(&max);
    assert_eq!(m[0]["state"], "declined", "{m:?}");
    assert!(asks(&max).is_empty(), "a decline is reported once");
    let lo = asks(&lou);
    assert_eq!(lo[0]["state"], "joined", "{lo:?}");

    // Quorum: the talk opens, and the listing is gone from the board.
    kim.ok(&["read", &talk, "--wait-open"]);
    assert!(
        browse(&max, &relay, PHRASE).is_empty(),
        "a full talk is not listed"
    );

    owner.ok(&["send", &talk, "welcome both"]);
    kim.ok(&["send", &talk, "hi from kim"]);
    let seen = |n: &Nook, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines = n.ok(&["--json", "read", &talk]).json_lines();
            if lines.iter().any(|l| l["text"] == want) {
                return;
            }
            assert!(Instant::now() < deadline, "{want} never arrived: {lines:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    seen(&lou, "welcome both");
    seen(&lou, "hi from kim");
    seen(&owner, "hi from kim");

    owner.ok(&["close", &talk]);
    for n in [&kim, &lou] {
        // Each member's next contact learns of the close and erases the talk.
        let _ = n.run(&["read", &talk]);
    }

    let needles: Vec<&[u8]> = vec![
        b"procurement berlin",
        PHRASE.as_bytes(),
        TITLE.as_bytes(),
        ABOUT.as_bytes(),
        b"note from kim",
        b"note from lou",
        b"note from max",
        b"kim-seeker",
        b"lou-seeker",
        b"max-seeker",
        b"owner-ann",
        b"welcome both",
    ];
    for (who, dir) in [
        ("owner", owner.home_dir()),
        ("kim", kim.home_dir()),
        ("lou", lou.home_dir()),
        ("max", max.home_dir()),
        ("relay", relay.data_dir()),
    ] {
        let bytes = all_bytes(&dir);
        assert!(!bytes.is_empty(), "{who}: scanned nothing");
        for n in &needles {
            assert!(
                !contains(&bytes, n),
                "{who} still holds {:?}",
                String::from_utf8_lossy(n)
            );
        }
    }
}

#[test]
fn a_wrong_phrase_finds_nothing_and_a_gone_listing_cannot_be_asked() {
    let relay = Relay::start();
    let owner = Nook::new();
    let talk = text(
        &owner
            .ok(&["--json", "new", "--relay", &relay.address, "--seats", "2"])
            .json()["talk"],
    );
    owner.ok(&["post", &talk, "--board", PHRASE, "--title", TITLE]);
    let seeker = Nook::new();
    // Not an error: exactly what an empty board answers.
    let wrong = seeker.run(&[
        "--json",
        "browse",
        "--relay",
        &relay.address,
        "--board",
        "procurement munich",
    ]);
    assert_eq!(wrong.code, 0, "{wrong:?}");
    assert!(wrong.json_lines().is_empty());
    let listing = text(&browse(&seeker, &relay, PHRASE)[0]["listing"]);

    owner.ok(&["unpost", &talk]);
    assert!(browse(&seeker, &relay, PHRASE).is_empty());
    let gone = seeker.run(&["--json", "ask", &listing]);
    assert_eq!(gone.code, 5, "{gone:?}");
    assert!(gone.stderr.contains("listing_unknown"), "{}", gone.stderr);
    // A refused ask leaves nothing pending.
    assert!(asks(&seeker).is_empty());
    // A handle that is not one is bad input, before anything is sent.
    let bad = seeker.run(&["--json", "ask", "nook-listing:AAAA"]);
    assert_eq!(bad.code, 5, "{bad:?}");
    assert!(bad.stderr.contains("bad_input"), "{}", bad.stderr);
}

/// Requests made by hand on the wire: a replayed frame is refused by the relay; a
/// forged body, a body moved to another id, and a reply key used twice are dropped by
/// the owner's client and counted, never shown.
#[test]
fn replayed_and_forged_requests_are_refused_or_dropped() {
    use nook_crypto::RelayAddr;
    use nook_crypto::board::{Board, BoxKey, SeatRequest, seal_request};
    use nook_proto::{Ask, ErrorCode, ListingId, Request, RequestId, Response};

    let relay = Relay::start();
    let owner = Nook::new();
    let talk = text(
        &owner
            .ok(&["--json", "new", "--relay", &relay.address, "--seats", "3"])
            .json()["talk"],
    );
    owner.ok(&["post", &talk, "--board", PHRASE, "--title", TITLE]);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let addr: RelayAddr = relay.address.parse().unwrap();
        let board = Board::derive(PHRASE, &addr.fingerprint).unwrap();
        let conn = nook_client::RelayConnection::connect(&addr).await.unwrap();
        let Response::Listings { items, .. } = conn
            .request(Request::Browse {
                board: board.id,
                after: None,
            })
            .await
            .unwrap()
        else {
            panic!("not a listing page")
        };
        let item = &items[0];
        let listing = board.open_listing(&item.listing, &item.body).unwrap();
        let reply = BoxKey::generate(&mut rand::rng());
        let req = SeatRequest {
            reply_key: reply.public(),
            alias: "by-hand".into(),
            note: "genuine".into(),
        };
        let ask = |id: [u8; 16], body: Vec<u8>| {
            Request::Ask(Ask {
                listing: item.listing,
                request: RequestId(id),
                body,
            })
        };
        let body = seal_request(
            &mut rand::rng(),
            &listing.owner_key,
            &item.listing,
            &RequestId([1; 16]),
            &req,
        )
        .unwrap();
        assert_eq!(
            conn.request(ask([1; 16], body.clone())).await.unwrap(),
            Response::Asked
        );
        // The same frame again: refused.
        let replay = conn.request(ask([1; 16], body.clone())).await.unwrap_err();
        assert_eq!(replay.code(), Some(ErrorCode::RequestExists));
        // The same body under another id: stored (the relay cannot tell), dropped by
        // the owner because its AAD names the first id.
        assert_eq!(
            conn.request(ask([2; 16], body)).await.unwrap(),
            Response::Asked
        );
        // Random bytes of a bucket's size: dropped as forged.
        let mut junk = vec![0u8; 512];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut junk);
        assert_eq!(
            conn.request(ask([3; 16], junk)).await.unwrap(),
            Response::Asked
        );
        // A fresh seal of the same reply key under a new id: a replay, dropped.
        let again = seal_request(
            &mut rand::rng(),
            &listing.owner_key,
            &item.listing,
            &RequestId([4; 16]),
            &req,
        )
        .unwrap();
        assert_eq!(
            conn.request(ask([4; 16], again)).await.unwrap(),
            Response::Asked
        );
        // Not a padding bucket: refused before it is stored.
        let odd = conn.request(ask([5; 16], vec![0; 100])).await.unwrap_err();
        assert_eq!(odd.code(), Some(ErrorCode::TooLarge));
        // An unknown listing: refused.
        let none = conn
            .request(Request::Ask(Ask {
                listing: ListingId([9; 16]),
                request: RequestId([6; 16]),
                body: vec![0; 512],
            }))
            .await
            .unwrap_err();
        assert_eq!(none.code(), Some(ErrorCode::UnknownListing));
        conn.close().await;
    });

    let r = owner.ok(&["--json", "requests", &talk]);
    let shown = r.json_lines();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["note"], "genuine");
    assert_eq!(shown[0]["request"], "01".repeat(16));
    let warning: Value = serde_json::from_str(r.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(warning["type"], "warning");
    assert!(
        text(&warning["message"]).starts_with("2 request(s) did not open")
            && text(&warning["message"]).contains("1 repeated"),
        "{warning}"
    );
}

/// A connection that asks too fast is slowed down with its own error; the relay and
/// the owner go on.
#[test]
fn a_flood_of_asks_is_rate_limited_and_capped_per_listing() {
    use nook_crypto::RelayAddr;
    use nook_crypto::board::Board;
    use nook_proto::{Ask, ErrorCode, Request, RequestId, Response};

    let relay = Relay::start();
    let owner = Nook::new();
    let talk = text(
        &owner
            .ok(&["--json", "new", "--relay", &relay.address, "--seats", "2"])
            .json()["talk"],
    );
    owner.ok(&["post", &talk, "--board", PHRASE, "--title", TITLE]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut asked, mut limited, mut full) = (0u32, 0u32, 0u32);
    rt.block_on(async {
        let addr: RelayAddr = relay.address.parse().unwrap();
        let board = Board::derive(PHRASE, &addr.fingerprint).unwrap();
        // Several connections, each beyond its ask budget (30 a minute).
        for c in 0..4u8 {
            let conn = nook_client::RelayConnection::connect(&addr).await.unwrap();
            let Response::Listings { items, .. } = conn
                .request(Request::Browse {
                    board: board.id,
                    after: None,
                })
                .await
                .unwrap()
            else {
                panic!("not a listing page")
            };
            for i in 0..40u8 {
                let r = conn
                    .request(Request::Ask(Ask {
                        listing: items[0].listing,
                        request: RequestId([c, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                        body: vec![0; 512],
                    }))
                    .await;
                match r {
                    Ok(Response::Asked) => asked += 1,
                    Err(e) if e.code() == Some(ErrorCode::RateLimited) => limited += 1,
                    Err(e) if e.code() == Some(ErrorCode::TooManyRequests) => full += 1,
                    other => panic!("{other:?}"),
                }
            }
            conn.close().await;
        }
    });
    assert_eq!(asked, 64, "the listing holds 64 requests");
    assert!(
        limited >= 4 * 10,
        "each connection is cut after 30: {limited}"
    );
    assert!(full > 0);
    // The owner's client still works: all 64 are junk and dropped, none shown.
    let r = owner.ok(&["--json", "requests", &talk]);
    assert!(r.json_lines().is_empty());
    assert!(
        r.stderr.contains("64 request(s) did not open"),
        "{}",
        r.stderr
    );
}

/// The relay keeps idle talks out of memory and reads only their records at start:
/// a listing and a waiting request must both come back after a restart, and the
/// admitted seeker still takes its seat.
#[test]
fn listings_and_requests_survive_a_relay_restart() {
    let mut relay = Relay::start();
    let owner = Nook::new();
    let created = owner
        .ok(&["--json", "new", "--relay", &relay.address, "--alias", "ann"])
        .json();
    let talk = text(&created["talk"]);
    owner.ok(&[
        "--json", "post", &talk, "--board", PHRASE, "--title", TITLE, "--about", ABOUT,
    ]);
    let kim = Nook::new();
    let listing = text(&browse(&kim, &relay, PHRASE)[0]["listing"]);
    let asked = kim
        .ok(&["--json", "ask", &listing, "--alias", "kim"])
        .json();
    assert_eq!(asked["state"], "waiting");

    relay.restart();

    let found = browse(&kim, &relay, PHRASE);
    assert_eq!(
        found.len(),
        1,
        "the listing is back after the restart: {found:?}"
    );
    assert_eq!(found[0]["title"], TITLE);
    let waiting = requests(&owner, &talk);
    assert_eq!(waiting.len(), 1, "the request is back too: {waiting:?}");
    owner.ok(&["--json", "admit", &talk, &text(&waiting[0]["request"])]);
    let settled = asks(&kim);
    assert_eq!(settled.len(), 1, "{settled:?}");
    assert_eq!(settled[0]["state"], "joined", "{settled:?}");
    let members = kim.ok(&["--json", "list"]).json_lines();
    assert_eq!(members.len(), 1, "kim holds the talk now: {members:?}");
}

/// A talk of `seats` (quorum 3) posted on [`PHRASE`], and its listing's handle.
fn posted_talk(relay: &Relay, owner: &Nook, seats: &str) -> (String, String) {
    let created = owner
        .ok(&[
            "--json",
            "new",
            "--relay",
            &relay.address,
            "--seats",
            seats,
            "--quorum",
            "3",
        ])
        .json();
    let talk = text(&created["talk"]);
    owner.ok(&["post", &talk, "--board", PHRASE, "--title", TITLE]);
    let found = browse(owner, relay, PHRASE);
    assert_eq!(found.len(), 1, "{found:?}");
    (talk, text(&found[0]["listing"]))
}

/// The stderr notices of settled asks (`ask_answer`) in a `--json` run.
fn ask_answers(r: &nook_e2e::Run) -> Vec<Value> {
    r.stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "ask_answer")
        .collect()
}

#[test]
fn an_admitted_seeker_takes_its_seat_with_list_or_read_alone() {
    let relay = Relay::start();
    let owner = Nook::new();
    let (talk, listing) = posted_talk(&relay, &owner, "4");
    let (kim, lou, max) = (Nook::new(), Nook::new(), Nook::new());
    for (n, alias) in [(&kim, "kim-x"), (&lou, "lou-x"), (&max, "max-x")] {
        n.ok(&["ask", &listing, "--alias", alias]);
    }

    // Before an answer: `read LISTING` says the ask waits, and nothing else.
    let waiting = lou.ok(&["--json", "read", &listing]);
    assert!(waiting.stdout.trim().is_empty(), "{waiting:?}");
    assert_eq!(ask_answers(&waiting)[0]["state"], "waiting", "{waiting:?}");
    // A listing this device never asked on.
    let never = Nook::new().run(&["--json", "read", &listing, "--wait-open"]);
    assert_eq!(never.code, 5, "{never:?}");
    assert!(never.stderr.contains("request_unknown"), "{never:?}");

    // The owner answers while the seekers are offline.
    let reqs = requests(&owner, &talk);
    let id_of = |alias: &str| text(&reqs.iter().find(|r| r["alias"] == alias).unwrap()["request"]);
    owner.ok(&["admit", &talk, &id_of("kim-x")]);
    owner.ok(&["admit", &talk, &id_of("lou-x")]);
    owner.ok(&["decline", &talk, &id_of("max-x")]);

    // kim's next command is `list`: the seat is taken, the talk listed, the answer
    // reported once on stderr.
    let listed = kim.ok(&["--json", "list"]);
    assert!(
        listed
            .json_lines()
            .iter()
            .any(|t| t["talk"] == talk.as_str()),
        "{listed:?}"
    );
    let told = ask_answers(&listed);
    assert_eq!(told.len(), 1, "{listed:?}");
    assert_eq!(
        (&told[0]["state"], &told[0]["talk"]),
        (&"joined".into(), &talk.clone().into())
    );
    assert!(
        ask_answers(&kim.ok(&["--json", "list"])).is_empty(),
        "reported once"
    );

    // lou's next command is `read LISTING --wait-open`: it takes the seat, which
    // makes the quorum of 3, and returns once the talk is open.
    let read = lou.ok(&["--json", "read", &listing, "--wait-open"]);
    assert_eq!(ask_answers(&read)[0]["state"], "joined", "{read:?}");
    assert!(
        read.json_lines().iter().any(|e| e["type"] == "opened"),
        "{read:?}"
    );
    assert!(asks(&lou).is_empty(), "the ask is forgotten once taken");

    // max's next `read` of anything tells it the decline, once.
    let first = max.ok(&["--json", "list"]);
    assert_eq!(ask_answers(&first)[0]["state"], "declined", "{first:?}");
    assert!(ask_answers(&max.ok(&["--json", "list"])).is_empty());
}

#[test]
fn rpc_serves_the_board_methods_and_streams_seat_requests() {
    use nook_e2e::rpc::RpcSession;
    use serde_json::json;
    let relay = Relay::start();
    let owner = Nook::new();
    let created = owner
        .ok(&["--json", "new", "--relay", &relay.address, "--seats", "3"])
        .json();
    let talk = text(&created["talk"]);
    let mut o = RpcSession::start(&owner);
    let posted = o.ok(
        "post",
        json!({"talk": talk, "board": [PHRASE], "title": TITLE, "tags": "a,b", "until": "1h"}),
    );
    assert_eq!(posted["listings"].as_array().unwrap().len(), 1, "{posted}");
    o.ok("subscribe", json!({"talk": talk}));

    let kim = Nook::new();
    let mut k = RpcSession::start(&kim);
    let found = k.ok(
        "browse",
        json!({"relay": relay.address, "board": "procurement berlin"}),
    );
    assert_eq!(found[0]["tags"], json!(["a", "b"]), "{found}");
    let listing = text(&found[0]["listing"]);
    let asked = k.ok(
        "ask",
        json!({"listing": listing, "alias": "kim-rpc", "note": "me"}),
    );
    assert_eq!(asked["state"], "waiting");

    // The owner's subscription hears of the request.
    let note = o.notification(Duration::from_secs(20), |n| {
        n["method"] == "event" && n["params"]["event"]["type"] == "seat_request"
    });
    assert_eq!(note["params"]["talk"], talk.as_str());
    assert_eq!(note["params"]["event"]["alias"], "kim-rpc", "{note}");
    assert_eq!(note["params"]["event"]["note"], "me", "{note}");
    let reqs = o.ok("requests", json!({"talk": talk}));
    assert_eq!(reqs[0]["alias"], "kim-rpc", "{reqs}");
    assert_eq!(note["params"]["event"]["request"], reqs[0]["request"]);
    let answered = o.ok(
        "admit",
        json!({"talk": talk, "request": reqs[0]["request"]}),
    );
    assert_eq!(answered["answer"], "admitted");

    // kim's `list` takes the seat; the settled ask comes as an `ask` notification.
    let talks = k.ok("list", json!({}));
    assert!(
        talks
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["talk"] == talk.as_str()),
        "{talks}"
    );
    let settled = k.notification(Duration::from_secs(5), |n| n["method"] == "ask");
    assert_eq!(settled["params"]["ask"]["state"], "joined", "{settled}");
    assert!(k.ok("asks", json!({})).as_array().unwrap().is_empty());

    let lou = Nook::new();
    let mut l = RpcSession::start(&lou);
    // The talk is full (3 seats: owner, kim, and one left): lou asks, is declined.
    l.ok("ask", json!({"listing": listing}));
    let reqs = o.ok("requests", json!({"talk": talk}));
    let d = o.ok(
        "decline",
        json!({"talk": talk, "request": reqs[0]["request"]}),
    );
    assert_eq!(d["answer"], "declined");
    assert_eq!(l.ok("asks", json!({}))[0]["state"], "declined");
    let gone = o.ok("unpost", json!({"talk": talk}));
    assert_eq!(gone["withdrawn"], 1, "{gone}");
}
