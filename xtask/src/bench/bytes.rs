//! Redis memory per call (issue 18's "one copy"): 6 KB calls with three actions, measured
//! queued (before fan-out), with their actions queued (after it) and settled.

use super::*;

/// The event of this scenario: the workload's, with a transcript of a plausible support
/// call (generated from a fixed seed: varied sentences, names, numbers, dates, tracking
/// codes) making the event's JSON about 6,000 bytes. Not one line repeated: that would
/// compress far better than a real conversation and flatter compression at rest.
pub(super) fn big_event(events: &Events) -> CallEvent {
    let mut e = events.template.clone();
    e.transcript = Some(String::new());
    let room = 6_000 - serde_json::to_string(&e).map_or(0, |s| s.len());
    e.transcript = Some(conversation(0x5eed_ca11, room));
    e
}

/// A small deterministic generator (SplitMix64): the benchmark needs no `rand`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }

    /// Takes one of the next few of `xs` out: roughly in order (greeting first, goodbye
    /// last), never twice.
    fn take(&mut self, xs: &mut Vec<&'static str>) -> Option<&'static str> {
        (!xs.is_empty()).then(|| xs.remove(self.below(xs.len().min(3))))
    }
}

const FIRST: &[&str] = &[
    "Maria", "James", "Priya", "Tomás", "Aisha", "Wei", "Olivia", "Kwame", "Sofia", "Daniel",
    "Hannah", "Ravi", "Lucía", "Mohammed", "Ingrid", "Chen", "Grace", "Mateo",
];
const LAST: &[&str] = &[
    "Okafor",
    "Lindqvist",
    "Fernández",
    "Nakamura",
    "O'Brien",
    "Patel",
    "Kowalski",
    "Haddad",
    "Moreau",
    "Schmidt",
    "Abernathy",
    "Nguyen",
    "Castillo",
    "Brennan",
];
const PRODUCT: &[&str] = &[
    "the Aero 3 standing desk",
    "a pair of Trailmark hiking boots",
    "the 12-cup espresso maker",
    "two ceramic planters",
    "the cordless drill kit",
    "a queen-size linen duvet cover",
    "the noise-cancelling headphones",
    "a replacement filter pack",
    "the kids' bike helmet",
];
const STREET: &[&str] = &[
    "Maple Avenue",
    "Harbor Street",
    "Crescent Road",
    "Old Mill Lane",
    "Juniper Court",
    "Elm Street",
    "Riverside Drive",
    "Westbrook Boulevard",
];
const CITY: &[&str] = &[
    "Portland",
    "Columbus",
    "Sacramento",
    "Madison",
    "Raleigh",
    "Tucson",
    "Albany",
    "Boise",
];
const MONTH: &[&str] = &[
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const CARRIER: &[&str] = &["UPS", "FedEx", "USPS", "DHL"];

/// Lines with slots: {agent} {caller} {name} {product} {order} {date} {day} {time} {amount}
/// {address} {city} {zip} {tracking} {carrier} {email} {digits} {n}.
const AGENT: &[&str] = &[
    "Thanks for calling Acme Support, this is {agent}. How can I help you today?",
    "I'm sorry to hear that. Could I get the order number so I can pull it up?",
    "Thank you. I have order {order} here, placed on {date} for {product}.",
    "It looks like the package left our warehouse in {city} on {date} with {carrier}.",
    "The tracking number is {tracking}; the last scan shows it at a sorting facility.",
    "Can you confirm the shipping address for me? I have {address}, {city} {zip}.",
    "I can see a delivery exception was logged on {day} at {time}, probably a missed hand-off.",
    "What I can do is request a trace with the carrier, which usually takes one to two business days.",
    "Alternatively I can ship a replacement today by two-day air at no extra charge.",
    "The refund would be {amount}, back to the card ending in {digits}.",
    "Refunds show up within five to seven business days, depending on your bank.",
    "I've added a note to your account so anyone you speak to next will see the history.",
    "Just to verify your identity, can you tell me the e-mail address on the account?",
    "Perfect, that matches. I'll send the confirmation to {email}.",
    "I've also applied a {n} percent credit for the trouble; it will be on your next order.",
    "Is the phone number ending in {digits} still the best one to reach you?",
    "Our returns window is 30 days from delivery, so you're well within it.",
    "I'll e-mail you a prepaid return label; drop it at any {carrier} location.",
    "Let me check stock at the warehouse in {city}. One moment, please.",
    "Good news: we have {n} units on hand, so the replacement can go out this afternoon.",
    "You'll get a text when it ships, and another on the morning it's out for delivery.",
    "The new estimated delivery date is {day}, {date}, before {time} at the latest.",
    "I understand the frustration, and I appreciate your patience with us.",
    "I see a second order on the account, {order}, which is still being packed.",
    "Would you like me to combine the two shipments so they arrive together?",
    "For the warranty claim I'll need a photo of the damage and the serial number.",
    "You can reply to the confirmation e-mail with the photos; no need to call back.",
    "I've escalated this to our shipping team lead, who will follow up by {day}.",
    "I also see your subscription renews on {date} at {amount} a month.",
    "You were charged twice on {date}; the second charge was a pre-authorization that should drop off.",
    "If it hasn't dropped off by {day}, call us back and quote reference {tracking}.",
    "Our technician can come out between {time} and noon; would that suit you?",
    "The installation fee is waived for members, so that's one less thing.",
    "Your loyalty points balance is {n} hundred, which you could put toward the upgrade.",
    "Let me transfer you to billing if you'd like to change the payment method.",
    "Actually, I can update the card myself; I just need the expiry date, not the full number.",
    "I'm putting you on a brief hold while I confirm with the warehouse, about {n} seconds.",
    "Thanks for holding. The warehouse confirmed the replacement is packed and labelled.",
    "Please keep the original packaging until the claim is closed, just in case.",
    "The manufacturer's warranty covers parts for two years and labour for one.",
    "I'll mark the account so you aren't charged the restocking fee of {amount}.",
    "We've had a few reports of delays in the {zip} area this week because of the weather.",
    "Would you prefer a call or a text when the technician is on the way?",
    "Is there anything else I can help you with while I have you on the line?",
    "Thank you for your patience, {caller}. Have a wonderful rest of your day.",
];
const CALLER: &[&str] = &[
    "Hi, yes, my name is {name}. I'm calling about an order that never showed up.",
    "Sure, it's {order}. I ordered it on {date} and it was supposed to be here by now.",
    "The tracking page just says in transit and hasn't changed since {day}.",
    "Yes, that's right, {address}. Apartment {n}, actually, on the second floor.",
    "Oh, I didn't know that. Nobody knocked and there was no notice on the door.",
    "Honestly I'd rather have the replacement, I need it before the weekend.",
    "Is there any way to get it sooner? My brother is visiting on {day}.",
    "It's {email}, all lowercase.",
    "Yes, the number ending in {digits} is my cell, that's fine.",
    "Okay, that sounds fair. Will I need to send the first one back if it turns up?",
    "And the refund goes back to the same card, the one ending in {digits}?",
    "Great. Can you also check on my other order? I think it was {order}.",
    "Yeah, combining them would be great, less cardboard to deal with.",
    "That's a relief, thank you. I was worried I'd have to reorder everything.",
    "Could you send me a summary of all this by e-mail? I'll forget the details.",
    "One more thing: the box that did arrive last month had a dent, is that covered?",
    "I can take a photo tonight. The serial number is on the bottom, right?",
    "Sorry, I'm driving, could you repeat the date?",
    "That works, I work from home on {day}s anyway.",
    "I paid {amount} for it, including the express shipping, which obviously didn't help.",
    "Can I get the express shipping refunded too?",
    "Alright. And what's the reference number for this call, in case I need it?",
    "Wait, I also got charged twice on my statement, is that something you can see?",
    "Oh, a pre-authorization. My bank app showed it as a real charge.",
    "Text is better, I don't always pick up numbers I don't know.",
    "Do you have anything earlier? I have a dentist appointment at {time} that day.",
    "Hang on, let me grab a pen. Okay, go ahead.",
    "Sorry, the dog is barking, give me one second.",
    "I've been a customer for {n} years and this is the first time something went wrong.",
    "The expiry is {digits}, the new card came last month.",
    "Can the technician also look at the ice maker while he's there? It's been leaking.",
    "Weather, of course. We had a storm here on {day} night.",
    "Would it be cheaper to just upgrade to the newer model instead?",
    "Fine, I'll keep the box in the garage.",
    "My neighbour at {address} said she saw a van but nothing was left.",
    "Is the {amount} including tax?",
    "No, I think that's everything. You've been really helpful, {agent}.",
    "Thanks, have a good one.",
];

fn fill_slots(line: &str, r: &mut Rng, who: [&str; 2], name: &str, email: &str) -> String {
    let mut out = String::with_capacity(line.len() + 32);
    let mut rest = line;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let j = i + rest[i..].find('}').expect("closed slot");
        match &rest[i + 1..j] {
            "name" => out.push_str(name),
            "agent" => out.push_str(who[0]),
            "caller" => out.push_str(who[1]),
            "email" => out.push_str(email),
            "product" => out.push_str(r.pick(PRODUCT)),
            "order" => out.push_str(&format!("A{}-{:05}", 20 + r.below(80), r.below(100_000))),
            "date" => out.push_str(&format!("{} {}", r.pick(MONTH), 1 + r.below(28))),
            "day" => out.push_str(r.pick(&[
                "Monday",
                "Tuesday",
                "Wednesday",
                "Thursday",
                "Friday",
                "Saturday",
            ])),
            "time" => out.push_str(&format!(
                "{}:{:02} {}",
                1 + r.below(12),
                r.below(60),
                r.pick(&["a.m.", "p.m."])
            )),
            "amount" => out.push_str(&format!("${}.{:02}", 19 + r.below(480), r.below(100))),
            "address" => out.push_str(&format!("{} {}", 10 + r.below(9_990), r.pick(STREET))),
            "city" => out.push_str(r.pick(CITY)),
            "zip" => out.push_str(&format!("{:05}", 10_000 + r.below(89_999))),
            "tracking" => {
                const A: &[u8] = b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";
                out.push_str("1Z");
                out.extend((0..16).map(|_| A[r.below(A.len())] as char));
            }
            "carrier" => out.push_str(r.pick(CARRIER)),
            "digits" => out.push_str(&format!("{:04}", r.below(10_000))),
            "n" => out.push_str(&(2 + r.below(40)).to_string()),
            other => panic!("no slot {other}"),
        }
        rest = &rest[j + 1..];
    }
    out.push_str(rest);
    out
}

/// A conversation of alternating turns, at most `room` bytes once escaped in JSON.
fn conversation(seed: u64, room: usize) -> String {
    let mut r = Rng(seed);
    let agent = r.pick(FIRST);
    let caller = loop {
        let c = r.pick(FIRST);
        if c != agent {
            break c;
        }
    };
    let last = r.pick(LAST);
    let name = format!("{caller} {last}");
    let email = format!(
        "{}.{}{}@{}",
        caller.to_lowercase(),
        last.to_lowercase().replace('\'', ""),
        r.below(100),
        r.pick(&["gmail.com", "outlook.com", "fastmail.com", "icloud.com"])
    );
    let (mut agents, mut callers) = (AGENT.to_vec(), CALLER.to_vec());
    // The last two lines of each side close the call, whatever fits before them.
    let mut closing = Vec::new();
    for i in 0..4 {
        let (who, lines) = if i % 2 == 0 {
            ("Agent", &mut agents)
        } else {
            ("User", &mut callers)
        };
        let l = lines.remove(lines.len() - 2 + i / 2);
        closing.push(format!(
            "\n{who}: {}",
            fill_slots(l, &mut r, [agent, caller], &name, &email)
        ));
    }
    let json_len = |s: &str| serde_json::to_string(s).map_or(usize::MAX, |j| j.len());
    let room = room - json_len(&closing.concat()) + 2;
    let mut t = String::new();
    // Where the caller's last turn ends: the closing starts with the agent.
    let mut after_user = 0;
    for turn in 0.. {
        let (who, lines) = if turn % 2 == 0 {
            ("Agent", &mut agents)
        } else {
            ("User", &mut callers)
        };
        // Now and then a turn of two lines, as people talk.
        let k = 1 + usize::from(r.below(3) == 0);
        let mut said = Vec::new();
        for _ in 0..k {
            // The greeting and the caller's reason come first.
            let line = if turn < 2 && said.is_empty() {
                Some(lines.remove(0))
            } else {
                r.take(lines)
            };
            if let Some(l) = line {
                said.push(fill_slots(l, &mut r, [agent, caller], &name, &email));
            }
        }
        if said.is_empty() {
            break;
        }
        let next = format!(
            "{}{who}: {}",
            if t.is_empty() { "" } else { "\n" },
            said.join(" ")
        );
        if json_len(&(t.clone() + &next)) > room {
            break;
        }
        t.push_str(&next);
        if turn % 2 == 1 {
            after_user = t.len();
        }
    }
    t.truncate(after_user);
    t + &closing.concat()
}

/// Three webhook actions to the receiver, each `delay` after the fan-out: long enough to
/// measure the calls with their actions queued (scheduled) before they run.
fn agent(url: &str, delay_s: u64) -> anyhow::Result<AgentConfig> {
    let action = |i: usize| {
        format!(
            r#"{{"type":"webhook","url":"{url}","delay":"{delay_s}s","include_transcript":true,"headers":{{"x-action":"{i}"}},"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}"#
        )
    };
    let body = format!(
        r#"{{"name":"Acme Support","voice_tools":{{"post_call_follow_up":{{"enabled":true,"actions":[{},{},{}]}}}}}}"#,
        action(0),
        action(1),
        action(2)
    );
    AgentConfig::parse(body.as_bytes()).map_err(|e| anyhow::anyhow!("agent body: {e}"))
}

pub(super) async fn bytes(b: &mut Bench) -> anyhow::Result<Value> {
    let n = b.n(10_000, 2_000);
    let event = big_event(&b.events);
    let event_bytes = serde_json::to_vec(&event)?.len() as f64;
    let q = b.queue("bytes").await?;
    // The fan-out must end before the first action is due: a worker fans out several
    // thousand calls a second here.
    let delay_s = 15 + n as u64 / 1_000;
    q.set_agent("agent_bench", &agent(&b.rx.url(), delay_s)?)
        .await?;
    let mem0 = b.used_memory().await?;
    let mut i = 0;
    while i < n {
        let k = (n - i).min(2_000);
        let batch: Vec<CallEvent> = (i..i + k)
            .map(|j| {
                let mut e = event.clone();
                e.call_id = format!("call_{j:08}");
                e
            })
            .collect();
        q.enqueue(batch).await?;
        i += k;
    }
    let queued = b.used_memory().await?.saturating_sub(mem0) as f64 / n as f64;

    b.rx.reset().await?;
    let mut w = b.worker(&q, &[])?;
    let keys = q.keys().clone();
    let fanned = Instant::now() + Duration::from_secs(delay_s);
    while b.zcard(&keys.scheduled).await? < 3 * n as u64 {
        ensure!(
            Instant::now() < fanned,
            "the fan-out took longer than the actions' delay ({delay_s} s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let actions_queued = b.used_memory().await?.saturating_sub(mem0) as f64 / n as f64;

    // The receiver's wait gives up after a minute without a webhook: let the delay pass.
    tokio::time::sleep_until(fanned.into()).await;
    b.rx.wait_for(3 * n as u64).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.zcard(&keys.done).await? < 4 * n as u64 {
        ensure!(Instant::now() < deadline, "jobs did not all finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(b.zcard(&keys.dead).await? == 0, "dead letters");
    w.terminate(Duration::from_secs(30));
    let settled = b.used_memory().await?.saturating_sub(mem0) as f64 / n as f64;

    let calls = int(n as f64);
    let ev = int(event_bytes);
    let ratio = |x: f64| format!("{} B ({:.2} × the event)", int(x), x / event_bytes);
    b.report
        .row(
            format!("Redis bytes per call, queued ({calls} calls of {ev} B, 3 actions)"),
            ratio(queued),
        )
        .target(
            "<= 1.3 × event + 1 KB",
            queued <= 1.3 * event_bytes + 1024.0,
        );
    b.report
        .row(
            format!("Redis bytes per call, actions queued ({calls} calls)"),
            ratio(actions_queued),
        )
        .target(
            "<= 1.3 × event + 1 KB",
            actions_queued <= 1.3 * event_bytes + 1024.0,
        );
    b.report
        .row(
            format!("Redis bytes per call, settled ({calls} calls)"),
            ratio(settled),
        )
        .target("<= 1.5 × event", settled <= 1.5 * event_bytes);
    Ok(json!({
        "calls": n,
        "event_bytes": event_bytes,
        "queued_bytes_per_call": queued,
        "actions_queued_bytes_per_call": actions_queued,
        "settled_bytes_per_call": settled,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_is_6_kb_of_conversation_said_once() {
        let e = big_event(&Events::new().unwrap());
        let json = serde_json::to_string(&e).unwrap();
        if let Ok(out) = std::env::var("AFTERCALL_BENCH_EVENT_OUT") {
            std::fs::write(out, &json).unwrap();
        }
        assert!((5_700..=6_000).contains(&json.len()), "{}", json.len());
        let t = e.transcript.unwrap();
        let turns: Vec<&str> = t.lines().collect();
        assert!(turns.len() > 20, "{} turns", turns.len());
        assert!(turns[0].starts_with("Agent: ") && turns[1].starts_with("User: "));
        let mut seen = std::collections::HashSet::new();
        for s in t
            .split(['.', '?', '!'])
            .map(str::trim)
            .filter(|s| s.len() > 20)
        {
            assert!(seen.insert(s), "said twice: {s}");
        }
        // The same seed, the same event: runs compare.
        assert_eq!(Some(t), big_event(&Events::new().unwrap()).transcript);
    }
}
