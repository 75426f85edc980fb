use super::mask::masked_yaml;

use super::*;

#[test]
fn templates_compile_and_escape() {
    let env = pages();
    let html = env
        .get_template("error.html")
        .unwrap()
        .render(context! { title => "t", message => "<script>x</script>", csrf => "", page => "" })
        .unwrap();
    assert!(html.contains("&lt;script&gt;x&lt;"), "{html}");
    assert!(!html.contains("<script>x"));
}

#[test]
fn literal_secrets_in_yaml_are_masked() {
    let text = "name: a\nclient_secret: hunter2\npassword: ${env:P}\n  secret: \"abc\"\n";
    let m = masked_yaml(text);
    assert!(!m.contains("hunter2") && !m.contains("abc"), "{m}");
    assert!(m.contains("password: ${env:P}"), "{m}");
    assert!(m.contains("client_secret: ‹hidden›"), "{m}");
}

#[test]
fn secrets_in_block_flow_and_multiline_yaml_are_masked() {
    let text = "name: a\nsmtp:\n  auth: {username: u, password: FLOWPW}\n  other:\n    password: |\n      BLOCKPW\n    client_secret: >-\n      FOLDED1\n      FOLDED2\n    developer_token:\n      PLAINMULTI\n    secret:\n      - SEQPW\n  headers: {Authorization: \"Bearer HDRTOKEN\", X-Ok: shown}\n  password: ${env:PW}\n  subject: hi\n";
    let m = masked_yaml(text);
    for canary in [
        "FLOWPW",
        "BLOCKPW",
        "FOLDED1",
        "FOLDED2",
        "PLAINMULTI",
        "SEQPW",
        "HDRTOKEN",
    ] {
        assert!(!m.contains(canary), "{canary} shown:\n{m}");
    }
    for kept in [
        "username: u",
        "X-Ok: shown",
        "password: ${env:PW}",
        "subject: hi",
        "name: a",
    ] {
        assert!(m.contains(kept), "{kept} lost:\n{m}");
    }
    assert_eq!(m.lines().count(), text.lines().count());
}
