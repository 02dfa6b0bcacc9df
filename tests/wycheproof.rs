//! Project Wycheproof's Ed25519 vectors against the verification fedsync
//! uses: strict key parsing plus batch verification with strict fallback.

use ed25519_dalek::Signature;
use fedsync::core::verify::{parse_key, verify_items, Item};
use wycheproof::eddsa::{TestName, TestSet};
use wycheproof::TestResult;

#[test]
fn every_ed25519_vector_gets_the_expected_verdict() {
    let set = TestSet::load(TestName::Ed25519).expect("vectors load");
    // A valid filler so each vector is also checked inside a larger batch,
    // which is how deltas are verified in practice.
    let filler_key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let filler_msg: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 20]).collect();
    let mut checked = 0;
    for group in &set.test_groups {
        let pk: [u8; 32] = group.key.pk.as_ref().try_into().expect("32-byte key");
        for test in &group.tests {
            let expect_valid = test.result == TestResult::Valid;
            let verdict_alone;
            let verdict_in_batch;
            match (parse_key(&pk), <[u8; 64]>::try_from(test.sig.as_ref())) {
                (Ok(key), Ok(sig)) => {
                    let sig = Signature::from_bytes(&sig);
                    let item = || Item {
                        key,
                        message: test.msg.as_ref(),
                        signature: sig,
                    };
                    verdict_alone = verify_items(&[item()])[0];
                    let mut batch: Vec<Item> = filler_msg
                        .iter()
                        .map(|m| Item {
                            key: filler_key.verifying_key(),
                            message: m,
                            signature: ed25519_dalek::Signer::sign(&filler_key, m),
                        })
                        .collect();
                    batch.insert(3, item());
                    let verdicts = verify_items(&batch);
                    verdict_in_batch = verdicts[3];
                    assert_eq!(
                        verdicts.iter().filter(|v| !**v).count(),
                        !verdict_in_batch as usize
                    );
                }
                _ => {
                    verdict_alone = false;
                    verdict_in_batch = false;
                }
            }
            assert_eq!(
                verdict_alone, expect_valid,
                "tcId {} ({}) alone",
                test.tc_id, test.comment
            );
            assert_eq!(
                verdict_in_batch, expect_valid,
                "tcId {} ({}) in a batch",
                test.tc_id, test.comment
            );
            checked += 1;
        }
    }
    assert!(checked >= 100, "only {checked} vectors ran");
}
