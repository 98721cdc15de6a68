"""What a corpus is: native-layout parsers, label maps, the manifest schema."""
