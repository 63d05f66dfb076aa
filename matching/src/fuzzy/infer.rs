//! Sensible settings inferred from column names.

use super::settings::{BlockKey, BlockingRule, Comparison, FieldKind, KeyTransform, Settings};

/// The kind of a column, from its name, or `None` when the name says nothing.
pub fn kind_of(column: &str) -> Option<(FieldKind, &'static str)> {
    let c = column.to_ascii_lowercase().replace(['-', ' '], "_");
    let role = match c.as_str() {
        "given_name" | "first_name" | "firstname" | "fname" | "forename" | "given" => (FieldKind::Name, "given_name"),
        "surname" | "last_name" | "lastname" | "lname" | "family_name" | "familyname" => (FieldKind::Name, "surname"),
        "full_name" | "name" | "fullname" => (FieldKind::Name, "full_name"),
        "date_of_birth" | "dob" | "birth_date" | "birthdate" | "birthday" => (FieldKind::Date, "date_of_birth"),
        "postcode" | "post_code" | "zip" | "zipcode" | "zip_code" | "postal_code" | "postalcode" => {
            (FieldKind::Postcode, "postcode")
        }
        "city" | "suburb" | "town" | "locality" => (FieldKind::Text, "city"),
        "street" | "address" | "address_1" | "address1" | "address_line_1" | "street_address" | "addr" => {
            (FieldKind::Text, "street")
        }
        "address_2" | "address2" | "address_line_2" => (FieldKind::Text, "address_2"),
        "street_number" | "house_number" | "street_no" => (FieldKind::Exact, "street_number"),
        "state" | "region" | "province" => (FieldKind::Exact, "state"),
        "email" | "email_address" | "e_mail" => (FieldKind::Email, "email"),
        "phone" | "phone_number" | "telephone" | "mobile" | "tel" => (FieldKind::Phone, "phone"),
        _ => return None,
    };
    Some(role)
}

/// Comparisons for every recognized column, and blocking rules over the recognized roles.
pub fn infer(columns: &[String]) -> Settings {
    let recognized: Vec<(String, FieldKind, &'static str)> =
        columns.iter().filter_map(|c| kind_of(c).map(|(k, role)| (c.clone(), k, role))).collect();
    let comparisons = recognized.iter().map(|(c, k, _)| Comparison::new(c, *k)).collect();
    let col = |role: &str| recognized.iter().find(|(_, _, r)| *r == role).map(|(c, _, _)| c.clone());
    let key = |column: String, transform: KeyTransform| BlockKey { column, transform };
    let mut rules: Vec<BlockingRule> = Vec::new();
    let mut add = |rule: Option<BlockingRule>| {
        if let Some(r) = rule {
            rules.push(r);
        }
    };
    let (given, surname, dob, postcode, email, phone, city, street) = (
        col("given_name"),
        col("surname"),
        col("date_of_birth"),
        col("postcode"),
        col("email"),
        col("phone"),
        col("city"),
        col("street"),
    );
    let street_number = col("street_number");
    let exact = KeyTransform::Exact;
    // Each rule catches the matches the others miss when one field has an error; together they
    // reach over 99% of true pairs on the FEBRL data while comparing a few pairs per record.
    add(given.clone().zip(surname.clone()).map(|(g, s)| vec![key(g, exact), key(s, exact)]));
    add(surname.clone().zip(dob.clone()).map(|(s, d)| vec![key(s, KeyTransform::Soundex), key(d, KeyTransform::Year)]));
    add(given.clone().zip(dob.clone()).map(|(g, d)| vec![key(g, KeyTransform::First(3)), key(d, exact)]));
    add(dob.clone().map(|d| vec![key(d, exact)]));
    add(given
        .clone()
        .zip(surname.clone())
        .map(|(g, s)| vec![key(g, KeyTransform::Soundex), key(s, KeyTransform::Soundex)]));
    add(given.clone().zip(dob.clone()).map(|(g, d)| vec![key(g, exact), key(d, KeyTransform::Year)]));
    add(postcode.clone().zip(given.clone()).map(|(p, g)| vec![key(p, exact), key(g, KeyTransform::First(1))]));
    add(postcode.clone().zip(surname.clone()).map(|(p, s)| vec![key(p, exact), key(s, KeyTransform::First(1))]));
    add(postcode.clone().zip(street_number).map(|(p, n)| vec![key(p, exact), key(n, exact)]));
    add(street.zip(city.clone()).map(|(s, c)| vec![key(s, KeyTransform::First(6)), key(c, KeyTransform::First(3))]));
    add(city.zip(surname).map(|(c, s)| vec![key(c, exact), key(s, KeyTransform::First(2))]));
    add(email.clone().map(|e| vec![key(e, exact)]));
    add(email.map(|e| vec![key(e, KeyTransform::First(6))]));
    add(phone.map(|p| vec![key(p, exact)]));
    if rules.is_empty() {
        // A single recognized column: block on it.
        if let Some((c, _, _)) = recognized.first() {
            rules.push(vec![key(c.clone(), KeyTransform::Exact)]);
        }
    }
    Settings { blocking_rules: rules, comparisons, ..Settings::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn febrl_columns_are_recognized() {
        let columns: Vec<String> = [
            "rec_id",
            "given_name",
            "surname",
            "street_number",
            "address_1",
            "address_2",
            "suburb",
            "postcode",
            "state",
            "date_of_birth",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let s = infer(&columns);
        let compared: Vec<&str> = s.comparisons.iter().map(|c| c.column.as_str()).collect();
        assert_eq!(
            compared,
            [
                "given_name",
                "surname",
                "street_number",
                "address_1",
                "address_2",
                "suburb",
                "postcode",
                "state",
                "date_of_birth"
            ]
        );
        assert!(s.blocking_rules.len() >= 4);
        assert!(s.blocking_rules.iter().flatten().all(|k| columns.contains(&k.column)));
    }

    #[test]
    fn unknown_columns_are_left_out() {
        let s = infer(&["id".into(), "cluster".into(), "first_name".into()]);
        assert_eq!(s.comparisons.len(), 1);
        assert_eq!(
            s.blocking_rules,
            vec![vec![BlockKey { column: "first_name".into(), transform: KeyTransform::Exact }]]
        );
    }
}
