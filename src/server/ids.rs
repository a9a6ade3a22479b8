//! Member and cluster IDs, derived as etcd derives them so that the same flags give the same
//! IDs: member = SHA-1(sorted peer URLs ++ cluster token)[..8], cluster = SHA-1(sorted member
//! IDs as big-endian u64s)[..8], both read big-endian. IDs are shown in hex, as etcd shows them.

use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};

/// The ID of a member with these peer URLs in the cluster started with `token`.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut bytes = urls.concat().into_bytes();
    bytes.extend_from_slice(token.as_bytes());
    first_u64(&bytes)
}

/// The ID of a cluster whose initial members have these IDs.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    first_u64(&bytes)
}

fn first_u64(bytes: &[u8]) -> u64 {
    let hash = digest(&SHA1_FOR_LEGACY_USE_ONLY, bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// An ID as etcd prints it: lowercase hex without leading zeros.
pub fn hex_id(id: u64) -> String {
    format!("{id:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_etcds_derivation() {
        // etcd 3.x: a single member "default" on http://localhost:2380 with token
        // "etcd-cluster" is 8e9e05c52164694d in cluster cdf818194e3a8c32 (etcd's docs and logs).
        let m = member_id(&["http://localhost:2380".to_owned()], "etcd-cluster");
        assert_eq!(hex_id(m), "8e9e05c52164694d");
        assert_eq!(hex_id(cluster_id(&[m])), "cdf818194e3a8c32");
    }

    #[test]
    fn peer_url_order_does_not_matter() {
        let a = member_id(&["https://b:2380".into(), "https://a:2380".into()], "t");
        let b = member_id(&["https://a:2380".into(), "https://b:2380".into()], "t");
        assert_eq!(a, b);
        assert_ne!(
            a,
            member_id(&["https://a:2380".into(), "https://b:2380".into()], "u")
        );
        assert_eq!(cluster_id(&[1, 2, 3]), cluster_id(&[3, 1, 2]));
    }
}
