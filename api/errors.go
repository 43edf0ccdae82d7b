package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/turnstile/turnstile/starter"
)

// sessionBusyRetryAfter is the Retry-After of a session_busy answer.
const sessionBusyRetryAfter = 5 * time.Second

// apiError is an error with its HTTP status and machine-readable code. Every
// error answer has the body {"error":{"code","message"}}.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e apiError) Error() string { return e.Code + ": " + e.Message }

func errBadRequest(code, msg string) apiError { return apiError{http.StatusBadRequest, code, msg} }
func errNotFound(msg string) apiError         { return apiError{http.StatusNotFound, "not_found", msg} }
func errConflict(code, msg string) apiError   { return apiError{http.StatusConflict, code, msg} }
func errUnauthorized(msg string) apiError {
	return apiError{http.StatusUnauthorized, "unauthorized", msg}
}

// errUnavailable hides the backend error from the client; it is logged.
var errUnavailable = apiError{http.StatusServiceUnavailable, "unavailable", "a backend is unavailable; nothing was changed, try again"}

var errInternal = apiError{http.StatusInternalServerError, "internal", "internal error"}

// fail answers with err: an apiError as it is, anything else as 503 (a
// backend failed; the request was not accepted).
func fail(c *gin.Context, err error) {
	var ae apiError
	if errors.Is(err, starter.ErrSessionBusy) {
		// Nothing was signalled; the session takes signals again once its
		// current request is done and it has continued as new.
		c.Header("Retry-After", strconv.Itoa(int(sessionBusyRetryAfter.Seconds())))
		ae = apiError{http.StatusTooManyRequests, "session_busy",
			"this session has taken too many signals while its current request runs; nothing was changed, retry after it"}
	} else if !errors.As(err, &ae) {
		_ = c.Error(err) // the access log reports it
		ae = errUnavailable
	}
	c.AbortWithStatusJSON(ae.Status, gin.H{"error": ae})
}
