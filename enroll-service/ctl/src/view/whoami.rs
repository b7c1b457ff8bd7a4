//! `whoami`.

use oxroot_proto::v1::WhoAmIResponse;

use crate::output::{Fields, role_name, timestamp_text};

/// The caller as the service sees it; the platform's owner `*` is spelled out.
pub(crate) fn fields(me: &WhoAmIResponse) -> Fields {
    let owner = if me.owner == "*" {
        "* (platform)".to_owned()
    } else {
        me.owner.clone()
    };
    Fields::new()
        .field("name", &me.name)
        .field("owner", owner)
        .field("role", role_name(me.role))
        .field("certificate serial", &me.certificate_serial)
        .field("not after", timestamp_text(me.not_after.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::testing::{HOSTILE, assert_escaped, human, json_of};
    use oxroot_proto::v1::Role;

    #[test]
    fn whoami_marks_platform_operators() {
        let me = WhoAmIResponse {
            name: "root".into(),
            owner: "*".into(),
            role: Role::Admin as i32,
            certificate_serial: "0a".into(),
            not_after: None,
        };
        let text = human(|out| out.fields(&fields(&me)));
        assert!(text.contains("owner:               * (platform)"), "{text}");
        assert!(text.contains("role:                admin"), "{text}");
        let json = json_of(&me);
        assert_eq!(json["role"], "ROLE_ADMIN");
        assert!(json.get("not_after").is_none(), "{json}");
    }

    #[test]
    fn a_hostile_name_is_escaped_for_humans_and_exact_in_json() {
        let me = WhoAmIResponse {
            name: HOSTILE.into(),
            owner: HOSTILE.into(),
            ..WhoAmIResponse::default()
        };
        assert_escaped(&human(|out| out.fields(&fields(&me))), 2);
        let json = json_of(&me);
        assert_eq!(json["name"], HOSTILE);
        assert_eq!(json["owner"], HOSTILE);
    }
}
