package compile

// Every test of the package checks that a key numberNew numbers is new.
func init() { checkNewKeys = true }
