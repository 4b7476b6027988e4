//! Git's smart HTTP protocol (version 0), the two exchanges a revert
//! branch needs: fetch one commit's history, push one ref. Through the
//! operator's guarded reqwest client, so the egress rules, the redirect
//! policy and the one TLS stack apply to Git like to every other call. No
//! crate offers a push over a client of one's own without unsafe code
//! (libgit2's custom transports are registered through an unsafe global);
//! the protocol is small: pkt-lines and a pack.

use std::fmt::Write as _;

/// The most of a fetched pack kept in memory.
pub const MAX_PACK: usize = 64 << 20;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SmartHttpError {
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{0}: the answer is larger than {MAX_PACK} bytes")]
    TooLarge(String),
    #[error("the server's answer is not Git's smart protocol: {0}")]
    Protocol(String),
    #[error("the server refused the push: {0}")]
    Refused(String),
}

/// Where a repository is, and how to sign in.
#[derive(Clone, Debug)]
pub struct Remote {
    /// The repository's URL, e.g. `https://git.example/shop.git`.
    pub url: String,
    /// Basic authentication: user name and password (or token).
    pub basic_auth: Option<(String, String)>,
}

/// One pkt-line: four hex digits of length (the digits included), then the data.
pub fn pkt_line(data: &str) -> String {
    format!("{:04x}{data}", data.len() + 4)
}

/// The pkt-lines at the start of `bytes`, up to a flush (`0000`), and
/// what follows the flush.
pub fn read_pkt_lines(bytes: &[u8]) -> Result<(Vec<String>, &[u8]), SmartHttpError> {
    let mut lines = Vec::new();
    let mut rest = bytes;
    loop {
        let (head, tail) = rest
            .split_at_checked(4)
            .ok_or_else(|| SmartHttpError::Protocol("a pkt-line breaks off".into()))?;
        let length = std::str::from_utf8(head)
            .ok()
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
            .ok_or_else(|| SmartHttpError::Protocol(format!("bad pkt-line length {head:?}")))?;
        if length == 0 {
            return Ok((lines, tail));
        }
        let (data, tail) = tail
            .split_at_checked(length.saturating_sub(4))
            .ok_or_else(|| SmartHttpError::Protocol("a pkt-line breaks off".into()))?;
        lines.push(
            String::from_utf8_lossy(data)
                .trim_end_matches('\n')
                .to_owned(),
        );
        rest = tail;
    }
}

/// The refs a `info/refs` answer advertises (name, id), after its
/// `# service=` line and flush; capabilities dropped.
pub fn advertised_refs(body: &[u8]) -> Result<Vec<(String, String)>, SmartHttpError> {
    let (service, rest) = read_pkt_lines(body)?;
    if !service.iter().any(|line| line.starts_with("# service=")) {
        return Err(SmartHttpError::Protocol("no service announcement".into()));
    }
    let (lines, _) = read_pkt_lines(rest)?;
    Ok(lines
        .iter()
        .filter_map(|line| {
            let line = line.split('\0').next()?;
            let (id, name) = line.split_once(' ')?;
            Some((name.to_owned(), id.to_owned()))
        })
        .collect())
}

impl Remote {
    fn endpoint(&self, path: &str) -> String {
        format!("{}/{path}", self.url.trim_end_matches('/'))
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<Vec<u8>, SmartHttpError> {
        let request = match &self.basic_auth {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        };
        let answer = request
            .send()
            .await
            .map_err(|source| SmartHttpError::Http {
                url: url.to_owned(),
                source,
            })?;
        let status = answer.status();
        if !status.is_success() {
            return Err(SmartHttpError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
            });
        }
        let (body, more) = crate::egress::read_capped(answer, MAX_PACK).await;
        if more {
            return Err(SmartHttpError::TooLarge(url.to_owned()));
        }
        Ok(body)
    }

    /// The refs the repository advertises for `service`.
    pub async fn refs(
        &self,
        http: &reqwest::Client,
        service: &str,
    ) -> Result<Vec<(String, String)>, SmartHttpError> {
        let url = self.endpoint(&format!("info/refs?service={service}"));
        let body = self.send(http.get(&url), &url).await?;
        advertised_refs(&body)
    }

    /// The pack of everything reachable from `commit`.
    pub async fn fetch_pack(
        &self,
        http: &reqwest::Client,
        commit: &str,
    ) -> Result<Vec<u8>, SmartHttpError> {
        // The stateless exchange starts with the advertisement.
        self.refs(http, "git-upload-pack").await?;
        let url = self.endpoint("git-upload-pack");
        let mut body = pkt_line(&format!("want {commit} ofs-delta\n"));
        body.push_str("0000");
        body.push_str(&pkt_line("done\n"));
        let answer = self
            .send(
                http.post(&url)
                    .header("Content-Type", "application/x-git-upload-pack-request")
                    .header("Accept", "application/x-git-upload-pack-result")
                    .body(body),
                &url,
            )
            .await?;
        // "NAK" and the pack, unmultiplexed (no side-band asked for).
        let nak = answer
            .split_at_checked(8)
            .filter(|(head, _)| head.ends_with(b"NAK\n"))
            .ok_or_else(|| {
                SmartHttpError::Protocol(format!(
                    "upload-pack did not answer NAK: {}",
                    String::from_utf8_lossy(
                        answer.get(..answer.len().min(200)).unwrap_or_default()
                    )
                ))
            })?;
        Ok(nak.1.to_vec())
    }

    /// Sets `reference` to `new` (from `old`, the zero id for a new ref),
    /// sending `pack` (the objects the server lacks).
    pub async fn push(
        &self,
        http: &reqwest::Client,
        (old, new, reference): (&str, &str, &str),
        pack: Vec<u8>,
    ) -> Result<(), SmartHttpError> {
        let url = self.endpoint("git-receive-pack");
        let mut body = pkt_line(&format!("{old} {new} {reference}\0report-status\n")).into_bytes();
        body.extend_from_slice(b"0000");
        body.extend_from_slice(&pack);
        let answer = self
            .send(
                http.post(&url)
                    .header("Content-Type", "application/x-git-receive-pack-request")
                    .header("Accept", "application/x-git-receive-pack-result")
                    .body(body),
                &url,
            )
            .await?;
        let (report, _) = read_pkt_lines(&answer)?;
        let unpacked = report.iter().any(|line| line == "unpack ok");
        let updated = report.iter().any(|line| line == &format!("ok {reference}"));
        if unpacked && updated {
            return Ok(());
        }
        let mut why = String::new();
        for line in &report {
            let _ = write!(why, "{line}; ");
        }
        Err(SmartHttpError::Refused(
            why.trim_end_matches("; ").to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkt_lines_are_written_and_read_as_git_does() {
        assert_eq!(pkt_line("done\n"), "0009done\n");
        let advertisement = format!(
            "{}0000{}{}0000",
            pkt_line("# service=git-receive-pack\n"),
            pkt_line(&format!(
                "{} refs/heads/main\0report-status delete-refs\n",
                "a".repeat(40)
            )),
            pkt_line(&format!("{} refs/heads/dev\n", "b".repeat(40))),
        );
        assert_eq!(
            advertised_refs(advertisement.as_bytes()).unwrap(),
            [
                ("refs/heads/main".to_owned(), "a".repeat(40)),
                ("refs/heads/dev".to_owned(), "b".repeat(40))
            ]
        );
        let (lines, rest) = read_pkt_lines(b"000eunpack ok\n0000PACK").unwrap();
        assert_eq!((lines, rest), (vec!["unpack ok".to_owned()], &b"PACK"[..]));
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        for bad in [&b""[..], b"00", b"zzzz", b"0010short", b"0005"] {
            assert!(read_pkt_lines(bad).is_err(), "{bad:?}");
        }
        assert!(advertised_refs(b"0000").is_err());
    }
}
