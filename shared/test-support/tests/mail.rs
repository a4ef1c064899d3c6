//! The mail catcher receives what lettre sends, the way the fulfilment process sends it
//! (`AsyncSmtpTransport::<Tokio1Executor>::from_url`), and keeps each message as a file.

use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use test_support::mail::MailCatcher;

#[tokio::test]
async fn lettre_mail_arrives_and_is_parsed() {
    let catcher = MailCatcher::start().await;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&catcher.smtp_url())
        .expect("the catcher's URL is one lettre takes")
        .build();
    assert!(
        transport.test_connection().await.expect("connects"),
        "the server answers"
    );
    assert!(catcher.messages().is_empty());

    let from: Mailbox = "Order Backend <orders@example.com>".parse().unwrap();
    for (i, subject) in ["Order received", "Paiement refusé pour votre commande n° 42 — désolé, voici un objet assez long pour être replié"]
        .into_iter()
        .enumerate()
    {
        let message = Message::builder()
            .from(from.clone())
            .to(format!("Zoë <user{i}@example.com>").parse().unwrap())
            .message_id(Some(format!("<order-{i}.received@orders.example.com>")))
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(format!("Grüße, message {i}.\nSecond line.\n"))
            .unwrap();
        transport.send(message).await.expect("sent");
    }

    let messages = catcher.messages();
    assert_eq!(messages.len(), 2, "{messages:#?}");
    for (i, mail) in messages.iter().enumerate() {
        assert_eq!(
            mail.message_id.as_deref(),
            Some(format!("order-{i}.received@orders.example.com").as_str())
        );
        assert_eq!(mail.from, "orders@example.com");
        assert_eq!(mail.to, [format!("user{i}@example.com")]);
        // lettre ends DATA with CRLF.CRLF whatever the body ends with, so a body ending in a
        // line break arrives with one more: that is what a mail server stores.
        assert_eq!(mail.body, format!("Grüße, message {i}.\nSecond line.\n\n"));
        assert_eq!(
            mail.header("X-RcptTo"),
            Some(format!("user{i}@example.com").as_str()),
            "the envelope recipient"
        );
        assert!(
            mail.path.starts_with(catcher.maildir().join("new")),
            "one file each"
        );
    }
    assert_eq!(messages[0].subject, "Order received");
    assert_eq!(
        messages[1].subject,
        "Paiement refusé pour votre commande n° 42 — désolé, voici un objet assez long pour être replié"
    );
    assert!(
        messages[1]
            .header("Subject")
            .is_some_and(|s| s.contains("=?utf-8?")),
        "sent as encoded words: {:?}",
        messages[1].header("Subject")
    );

    // An address that is not ASCII (the checkout accepts them) goes through SMTPUTF8.
    let message = Message::builder()
        .from(from.clone())
        .to("Zoë <zoë@exämple.com>".parse().unwrap())
        .subject("Order shipped")
        .body("Tracking: 1Z999\n".to_owned())
        .unwrap();
    transport.send(message).await.expect("sent with SMTPUTF8");
    let messages = catcher.messages();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[2].to, ["zoë@exämple.com"]);
    assert_eq!(messages[2].subject, "Order shipped");
    // lettre adds a Message-ID only when asked (`.message_id(None)` makes one up): the
    // sender sets its own stable one, or there is none.
    assert_eq!(messages[2].message_id, None);

    let dir = catcher.maildir().to_path_buf();
    drop(catcher);
    assert!(!dir.exists(), "the Maildir is removed with the catcher");
}
