mod common;
use common::*;

#[test]
fn smoke() {
    let mut s = TestServer::start(2);
    let p = phones_on_distinct_shards(13900000000, 2, 2);
    let mut a = user(&s, &p[0], "pa");
    let mut b = user(&s, &p[1], "pb");
    befriend(&mut a, &p[0], &mut b, &p[1]);
    let r = a.request(text(&p[0], &p[1], "hello")).unwrap();
    assert_eq!(r["status"], "success", "{r}");
    let m = b.recv_type("receive_message").unwrap();
    assert_eq!(m["message_body"], "hello");
    assert_eq!(s.stop(), Some(0));
}
