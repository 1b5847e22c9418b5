//! E-mail addresses as identities: trimmed, lower-cased, plausibly shaped.

/// The stored form of an address, or why it is not one.
pub fn normalize(input: &str) -> Result<String, String> {
    let email = input.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if valid {
        Ok(email)
    } else {
        Err("email must be an email".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn addresses_are_trimmed_and_lower_cased() {
        assert_eq!(
            normalize("  Admin@Example.COM ").as_deref(),
            Ok("admin@example.com")
        );
        assert_eq!(
            normalize("admin@localhost").as_deref(),
            Ok("admin@localhost")
        );
    }

    #[test]
    fn malformed_addresses_are_rejected_with_the_nest_message() {
        for bad in ["", "admin", "@x", "a@", "a@@b", "a b@c", "a@.c", "a@c."] {
            assert_eq!(
                normalize(bad),
                Err("email must be an email".to_owned()),
                "{bad:?}"
            );
        }
    }
}
