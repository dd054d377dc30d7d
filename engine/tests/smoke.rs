mod common;
use common::*;

#[test]
fn smoke() {
    let mut s = TestServer::start(2);
    let (p, [mut a, mut b]) = two_friends(&s, 13900000000);
    let r = a.request(text(&p[0], &p[1], "hello")).unwrap();
    assert_eq!(r["status"], "success", "{r}");
    let m = b.recv_type("receive_message").unwrap();
    assert_eq!(m["message_body"], "hello");
    assert_eq!(s.stop(), Some(0));
}
