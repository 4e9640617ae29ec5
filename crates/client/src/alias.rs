//! Random per-talk aliases such as `quiet-otter`.

use rand::RngExt;

const ADJECTIVES: &[&str] = &[
    "quiet", "amber", "brisk", "calm", "dusky", "eager", "fond", "gentle", "hazy", "idle", "jolly",
    "keen", "lucky", "mellow", "nimble", "olive", "placid", "quick", "rosy", "shy", "tidy",
    "umber", "vivid", "wary", "young", "zesty", "bold", "clever", "dapper", "early", "frosty",
    "golden", "humble", "ivory", "jade", "kind", "lunar", "misty", "noble", "opal", "proud",
    "rapid", "silent", "tawny", "upbeat", "velvet", "witty", "sunny", "stormy", "sleek", "plucky",
    "merry", "lofty", "hidden", "gusty", "fleet", "dreamy", "cosmic", "breezy", "azure", "scarlet",
    "polar", "mossy", "coral",
];

const ANIMALS: &[&str] = &[
    "otter", "badger", "crane", "dingo", "egret", "ferret", "gecko", "heron", "ibis", "jackal",
    "koala", "lemur", "marten", "newt", "ocelot", "panda", "quail", "raven", "stoat", "tapir",
    "urchin", "vole", "walrus", "yak", "zebra", "bison", "civet", "dove", "eland", "finch",
    "gibbon", "hare", "impala", "jay", "kiwi", "lynx", "mole", "narwhal", "oriole", "puffin",
    "robin", "seal", "tern", "viper", "wren", "fox", "owl", "lark", "moth", "swift", "shrew",
    "mink", "hawk", "ibex", "kudu", "loon", "magpie", "orca", "pika", "rook", "sable", "teal",
    "whale", "wombat",
];

/// A fresh random alias, unrelated to any other talk's.
pub fn random_alias() -> String {
    let mut rng = rand::rng();
    let a = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
    let n = ANIMALS[rng.random_range(0..ANIMALS.len())];
    format!("{a}-{n}")
}
