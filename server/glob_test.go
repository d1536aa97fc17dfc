package server

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		pat, s string
		want   bool
	}{
		{"*", "", true},
		{"*", "abc", true},
		{"user:*", "user:1", true},
		{"user:*", "use", false},
		{"h?llo", "hello", true},
		{"h?llo", "hllo", false},
		{"h[ae]llo", "hallo", true},
		{"h[ae]llo", "hillo", false},
		{"h[^e]llo", "hallo", true},
		{"h[^e]llo", "hello", false},
		{"h[a-b]llo", "hbllo", true},
		{`h\*llo`, "h*llo", true},
		{`h\*llo`, "hello", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
	} {
		if got := globMatch([]byte(tc.pat), []byte(tc.s)); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v", tc.pat, tc.s, got)
		}
	}
}

// recursiveGlob is the plain backtracking matcher (exponential in the
// number of '*'): the reference globMatch must agree with.
func recursiveGlob(pattern, s []byte) bool {
	if len(pattern) == 0 {
		return len(s) == 0
	}
	if pattern[0] == '*' {
		for i := 0; i <= len(s); i++ {
			if recursiveGlob(pattern[1:], s[i:]) {
				return true
			}
		}
		return false
	}
	if len(s) == 0 {
		return false
	}
	width, ok := globToken(pattern, s[0])
	return ok && recursiveGlob(pattern[width:], s[1:])
}

// TestGlobMatchAgreesWithBacktracking compares globMatch with the
// recursive matcher on random patterns over a small alphabet, so that
// stars, classes and escapes meet often.
func TestGlobMatchAgreesWithBacktracking(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tokens := []string{"a", "b", "*", "*", "?", "[ab]", "[^a]", "[a-b]", `\*`, `\a`, "[", "]", "\\"}
	for n := 0; n < 200000; n++ {
		var pat, s []byte
		for range rng.IntN(7) {
			pat = append(pat, tokens[rng.IntN(len(tokens))]...)
		}
		for range rng.IntN(8) {
			s = append(s, "ab*[]\\"[rng.IntN(6)])
		}
		if got, want := globMatch(pat, s), recursiveGlob(pat, s); got != want {
			t.Fatalf("globMatch(%q, %q) = %v, the backtracking matcher says %v", pat, s, got, want)
		}
	}
}

// TestGlobMatchIsNotExponential: patterns with many stars that almost
// match. The recursive matcher took hours on the first (its cost grows as
// len(s) to the power of the number of stars); globMatch takes at most
// len(pattern)·len(s) steps.
func TestGlobMatchIsNotExponential(t *testing.T) {
	key := bytes.Repeat([]byte("a"), 60)
	for _, pat := range []string{
		"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b",
		"*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?!",
		"a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab",
	} {
		if globMatch([]byte(pat), key) {
			t.Errorf("globMatch(%q, a×60) = true", pat)
		}
	}
	if !globMatch(bytes.Repeat([]byte("*a"), 30), key) {
		t.Error("(*a)×30 does not match a×60")
	}
}
