package main

import (
	_ "github.com/cockroachdb/pebble/v2"
	_ "github.com/kvstore/kv/lsm"
)

func main() {}
