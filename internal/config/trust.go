package config

import "errors"

var errPrevWithoutCurrent = errors.New("needs the current secret set too (without it the secrets live in Redis)")

// hidden keeps a secret out of error messages and logs.
func hidden(secret string) string {
	if secret == "" {
		return ""
	}
	return "<hidden>"
}

// previousSecret checks a *_prev secret: it belongs to a rotation of a
// configured secret.
func previousSecret(prev, current string) error {
	if prev != "" && current == "" {
		return errPrevWithoutCurrent
	}
	return nil
}
