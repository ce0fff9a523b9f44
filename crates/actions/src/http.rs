//! The shared outbound HTTP client: an SSRF guard applied after DNS resolution, no
//! redirects, timeouts, and the default classification of responses into outcomes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use aftercall_core::Outcome;
use aftercall_core::job::snippet;
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::HeaderMap;

/// `url` parsed, from a small process-wide cache: webhook URLs repeat from job to job,
/// and parsing one (host normalization included) cost more than signing the payload.
pub fn parse_url(url: &str) -> Result<reqwest::Url, url::ParseError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    /// Distinct URLs kept; past it the cache starts over (a bound, not an LRU).
    const KEEP: usize = 1024;
    static CACHE: OnceLock<Mutex<HashMap<String, reqwest::Url>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(u) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(url) {
        return Ok(u.clone());
    }
    let parsed = reqwest::Url::parse(url)?;
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= KEEP {
        map.clear();
    }
    map.insert(url.to_string(), parsed.clone());
    Ok(parsed)
}

/// Outbound HTTP settings shared by webhooks, SMS and task providers.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub timeout: std::time::Duration,
    pub connect_timeout: std::time::Duration,
    /// Destinations allowed even though they are private or internal (on-prem, tests).
    pub allow: Vec<Cidr>,
    /// Refuse plain `http://` targets.
    pub https_only: bool,
    /// Idle connections kept per host.
    pub pool_per_host: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: crate::DEFAULT_TIMEOUT,
            connect_timeout: Duration::from_secs(10),
            allow: Vec::new(),
            https_only: false,
            pool_per_host: 32,
        }
    }
}

/// An IP network in CIDR notation, e.g. `127.0.0.0/8` or `fd00::/8`; a bare address is
/// a network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP network"))?;
        if p.is_empty() {
            return Ok(Cidr(IpNet::from(addr)));
        }
        let prefix = p
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` has a bad prefix length"))?;
        IpNet::new(addr, prefix).map(Cidr).map_err(|_| {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            format!("`{s}` has a prefix longer than {max}")
        })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

/// Why an address may not be called, or `None` when it is public.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let seg = v6.segments();
            // NAT64 (64:ff9b::/96) embeds an IPv4 address.
            if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
                let o = v6.octets();
                return forbidden_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            if v6.is_unspecified() {
                Some("unspecified address")
            } else if v6.is_loopback() {
                Some("loopback address")
            } else if seg[0] & 0xfe00 == 0xfc00 {
                Some("private (unique local) address")
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some("link-local address")
            } else if seg[0] & 0xff00 == 0xff00 {
                Some("multicast address")
            } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
                Some("documentation address")
            } else if seg[..6] == [0, 0, 0, 0, 0, 0] {
                Some("IPv4-compatible address")
            } else {
                None
            }
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        Some("cloud metadata address")
    } else if ip.is_loopback() {
        Some("loopback address")
    } else if ip.is_private() {
        Some("private address")
    } else if ip.is_link_local() {
        Some("link-local address")
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        Some("carrier-grade NAT address")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified address")
    } else if ip.is_multicast() {
        Some("multicast address")
    } else if ip.is_broadcast()
        || o[0] >= 240
        || ip.is_documentation()
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
    {
        Some("reserved address")
    } else {
        None
    }
}

/// A request refused by the SSRF guard. Permanent: the target will not become public.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "blocked: {host} resolves to {ip}, a {reason}; allow it explicitly with AFTERCALL_ALLOW_CIDRS"
)]
pub struct Blocked {
    pub host: String,
    pub ip: IpAddr,
    pub reason: &'static str,
}

/// Checks one address against the guard.
pub fn check_ip(host: &str, ip: IpAddr, allow: &[Cidr]) -> Result<(), Blocked> {
    if allow.iter().any(|c| c.contains(ip)) {
        return Ok(());
    }
    match forbidden_reason(ip) {
        None => Ok(()),
        Some(reason) => Err(Blocked {
            host: host.to_string(),
            ip,
            reason,
        }),
    }
}

/// The addresses a host resolved to that the guard lets through. An error only when
/// there were addresses and every one was refused: the first refusal.
pub fn allowed_addrs(
    host: &str,
    addrs: impl IntoIterator<Item = SocketAddr>,
    allow: &[Cidr],
) -> Result<Vec<SocketAddr>, Blocked> {
    let mut ok = Vec::new();
    let mut first_block = None;
    for a in addrs {
        match check_ip(host, a.ip(), allow) {
            Ok(()) => ok.push(a),
            Err(b) => {
                first_block.get_or_insert(b);
            }
        }
    }
    match first_block {
        Some(b) if ok.is_empty() => Err(b),
        _ => Ok(ok),
    }
}

/// DNS resolution that refuses forbidden addresses after resolving, so DNS rebinding to
/// an internal address cannot get through.
struct GuardedResolver {
    allow: Arc<Vec<Cidr>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let ok = allowed_addrs(&host, addrs, &allow)
                .map_err(|b| Box::new(b) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

/// Builds the shared client. Installs the ring crypto provider once per process.
pub fn client(cfg: &HttpConfig) -> Result<reqwest::Client, reqwest::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver {
            allow: Arc::new(cfg.allow.clone()),
        }))
        .redirect(reqwest::redirect::Policy::none())
        // HTTP(S)_PROXY would hand the target's name to a proxy to resolve, past the
        // guard above; outbound calls go direct.
        .no_proxy()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.connect_timeout)
        .pool_max_idle_per_host(cfg.pool_per_host)
        .user_agent(concat!("aftercall/", env!("CARGO_PKG_VERSION")))
        .https_only(cfg.https_only)
        .build()
}

/// Checks a URL before sending: scheme, and IP-literal hosts (which skip DNS).
pub fn check_url(url: &reqwest::Url, cfg: &HttpConfig) -> Result<(), Outcome> {
    if cfg.https_only && url.scheme() != "https" {
        return Err(Outcome::permanent(format!(
            "blocked: {} is not https and AFTERCALL_HTTPS_ONLY is set",
            url.scheme()
        )));
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(url::Host::Domain(d)) => match d.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => return Ok(()),
        },
        None => return Err(Outcome::permanent("URL has no host")),
    };
    check_ip(url.host_str().unwrap_or_default(), ip, &cfg.allow)
        .map_err(|b| Outcome::permanent(b.to_string()))
}

/// Default classification of a response: 2xx delivered; 408, 429 and 5xx retried
/// (honouring `Retry-After`); redirects and other 4xx permanent.
pub fn classify(status: u16, headers: &HeaderMap, body: &str) -> Outcome {
    classify_status(status, retry_after(headers), body)
}

/// [`classify`] for a caller that has read `Retry-After` itself.
pub fn classify_status(status: u16, retry_after: Option<Duration>, body: &str) -> Outcome {
    let snip = (!body.is_empty()).then(|| snippet(body));
    match status {
        200..=299 => Outcome::Delivered {
            status: Some(status),
            detail: None,
        },
        408 | 429 | 500..=599 => Outcome::Retry {
            error: format!("HTTP {status}"),
            status: Some(status),
            retry_after,
            snippet: snip,
        },
        300..=399 => Outcome::Permanent {
            error: format!("HTTP {status}: redirects are not followed"),
            status: Some(status),
            snippet: snip,
        },
        _ => Outcome::Permanent {
            error: format!("HTTP {status}"),
            status: Some(status),
            snippet: snip,
        },
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?)
}

/// A `Retry-After` value: delta-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Classifies a transport error: refused by the guard or malformed is permanent;
/// timeouts, connection failures and resets are retried.
pub fn classify_error(err: &reqwest::Error) -> Outcome {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(b) = e.downcast_ref::<Blocked>() {
            return Outcome::permanent(b.to_string());
        }
        source = e.source();
    }
    if err.is_builder() || err.is_redirect() {
        return Outcome::permanent(format!("request error: {}", error_chain(err)));
    }
    let kind = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    Outcome::retry(format!("{kind}: {}", error_chain(err)))
}

/// The error and its sources on one line. URLs are stripped: they may carry tokens.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let s = match e.downcast_ref::<reqwest::Error>() {
            Some(re) => re.without_url_ref().to_string(),
            None => e.to_string(),
        };
        if !parts.iter().any(|p: &String| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

trait WithoutUrlRef {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrlRef for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let s = self.to_string();
        match self.url() {
            Some(u) => s
                .replace(&format!(" ({u})"), "")
                .replace(u.as_str(), "<url>"),
            None => s,
        }
    }
}

/// Reads at most `limit` bytes of a response body as text; the rest is drained.
pub async fn read_body(mut resp: reqwest::Response, limit: usize) -> String {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        if buf.len() < limit {
            let take = (limit - buf.len()).min(chunk.len());
            buf.extend_from_slice(&chunk[..take]);
        }
        if buf.len() >= limit {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_table() {
        let blocked = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ];
        for ip in blocked {
            assert!(
                forbidden_reason(ip.parse().unwrap()).is_some(),
                "{ip} should be blocked"
            );
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(
                forbidden_reason(ip.parse().unwrap()).is_none(),
                "{ip} should pass"
            );
        }
    }

    #[test]
    fn allow_list() {
        let allow: Vec<Cidr> = vec!["127.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        assert!(check_ip("h", "127.0.0.1".parse().unwrap(), &allow).is_ok());
        assert!(check_ip("h", "fd12::1".parse().unwrap(), &allow).is_ok());
        assert!(check_ip("h", "10.0.0.1".parse().unwrap(), &allow).is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("fd00::/129".parse::<Cidr>().is_err());
        assert!("10.0.0.0/x".parse::<Cidr>().is_err());
        assert!(
            !"10.0.0.0/8"
                .parse::<Cidr>()
                .unwrap()
                .contains("::ffff:10.0.0.1".parse().unwrap()),
            "families are not mixed"
        );
        assert!(
            "10.0.0.1"
                .parse::<Cidr>()
                .unwrap()
                .contains("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn classification_table() {
        let h = HeaderMap::new();
        let kind = |o: Outcome| aftercall_testkit::outcome_kind(&o);
        for (status, want) in [
            (200, "delivered"),
            (204, "delivered"),
            (301, "permanent"),
            (400, "permanent"),
            (401, "permanent"),
            (404, "permanent"),
            (408, "retry"),
            (409, "permanent"),
            (429, "retry"),
            (500, "retry"),
            (503, "retry"),
        ] {
            assert_eq!(kind(classify(status, &h, "")), want, "{status}");
        }
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert!(
            matches!(classify(429, &h, ""), Outcome::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(7))
        );
        // An HTTP date: how long until then; one in the past means now.
        let later =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
