package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/m40llm/m40llm/internal/errclass"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/chat"
	"github.com/m40llm/m40llm/model/sample"
)

// Error types and codes of OpenAI's error body that the server uses.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeServer         = "server_error"
	TypeUnavailable    = "unavailable_error"

	CodeContextLengthExceeded = "context_length_exceeded"
	CodeInvalidAPIKey         = "invalid_api_key"
	CodeModelNotFound         = "model_not_found"
	CodeRequestTooLarge       = "request_too_large"
	CodeServerBusy            = "server_busy"
	CodeModelLoading          = "model_loading"
	CodeShuttingDown          = "shutting_down"
	CodeInternal              = "internal_error"
	CodeOutOfMemory           = "out_of_memory"
	CodeBackendFailed         = "backend_failed"
	CodeInvalidJSON           = "invalid_json"
	CodeInvalidValue          = "invalid_value"
	CodeUnsupported           = "unsupported_value"
	CodeRequestTimeout        = "request_timeout"
	CodeHostNotAllowed        = "host_not_allowed"
	CodeUnsupportedMediaType  = "unsupported_media_type"
	CodeUnknownParameter      = "unknown_parameter"
	CodeMethodNotAllowed      = "method_not_allowed"
)

// Error is an API error: an HTTP status and OpenAI's error body
// ({"error":{"message","type","param","code"}}). Every failure a handler
// reports is an *Error; conversion functions return them for bad requests.
type Error struct {
	Status  int    // HTTP status code
	Message string // human-readable description
	Type    string // OpenAI error type, e.g. "invalid_request_error"
	Param   string // the request field at fault, or ""
	Code    string // machine-readable code, or ""
	// RetryAfter, when positive, is sent as the Retry-After header (seconds).
	RetryAfter int
	// Err is the underlying error, if any (logged, never sent).
	Err error
}

// Error returns the message with the status.
func (e *Error) Error() string {
	if e.Param != "" {
		return fmt.Sprintf("%d %s (%s): %s", e.Status, e.Type, e.Param, e.Message)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message)
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// ErrorBody is the JSON body of an error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inner object of ErrorBody. Param and Code are null
// when empty, as in OpenAI's responses.
type ErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// Body returns the error's JSON body.
func (e *Error) Body() ErrorBody {
	d := ErrorDetail{Message: e.Message, Type: e.Type}
	if e.Param != "" {
		d.Param = &e.Param
	}
	if e.Code != "" {
		d.Code = &e.Code
	}
	return ErrorBody{Error: d}
}

func badRequest(param, code, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: param, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Sentinel errors of the scheduler; apiError maps them to responses.
var (
	// ErrBusy: every slot is in use and the queue is full.
	ErrBusy = errors.New("server: all slots are busy and the queue is full")
	// ErrShuttingDown: the server is stopping and takes no new work.
	ErrShuttingDown = errors.New("server: shutting down")
	// ErrNotReady: the model is still loading.
	ErrNotReady = errors.New("server: the model is loading")
)

// apiError turns any error into an *Error: an *Error stays as it is, the
// scheduler's sentinels become 503, a body over the size limit 413 and one
// past the body timeout 408, and every other error is answered by
// its class (errclass.Of): a bad parameter or a prompt too long 400, the
// device out of memory or failed 503, a cancelled request 499 (nothing is
// sent), everything else 500.
func apiError(err error) *Error {
	var ae *Error
	var me *http.MaxBytesError
	var bte *bodyTimeoutError
	var mme *ModelMemoryError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &mme):
		return mme.apiError()
	case errors.Is(err, ErrBusy):
		return &Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: CodeServerBusy, RetryAfter: 1,
			Message: "the server is busy: every slot is in use and the queue is full; retry later", Err: err}
	case errors.Is(err, ErrShuttingDown), errors.Is(err, model.ErrEngineClosed):
		return &Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: CodeShuttingDown,
			Message: "the server is shutting down", Err: err}
	case errors.Is(err, ErrNotReady):
		return &Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: CodeModelLoading, RetryAfter: 1,
			Message: "the model is loading; retry later", Err: err}
	case errors.As(err, &me):
		return tooLarge(me.Limit)
	case errors.As(err, &bte):
		return bodyTimeout(bte.timeout)
	}
	switch errclass.Of(err) {
	case errclass.Invalid:
		var pe *sample.ParamError
		var te *chat.TemplateError
		switch {
		case errors.As(err, &pe):
			return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: CodeInvalidValue, Param: paramName(pe.Field),
				Message: fmt.Sprintf("invalid %s %v: %s", paramName(pe.Field), pe.Value, pe.Reason), Err: err}
		case errors.As(err, &te):
			return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: "messages", Message: te.Message, Err: err}
		}
		return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: CodeInvalidValue, Message: err.Error(), Err: err}
	case errclass.ContextFull:
		return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: CodeContextLengthExceeded, Message: err.Error(), Err: err}
	case errclass.OutOfMemory:
		return &Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: CodeOutOfMemory, RetryAfter: 1,
			Message: "the device ran out of memory for this step; retry later: " + err.Error(), Err: err}
	case errclass.Device:
		return &Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: CodeBackendFailed,
			Message: "the model's backend has failed and cannot serve requests: " + err.Error(), Err: err}
	case errclass.Canceled:
		return &Error{Status: 499, Type: TypeServer, Message: "the request was cancelled", Err: err}
	}
	return &Error{Status: http.StatusInternalServerError, Type: TypeServer, Code: CodeInternal, Message: "internal error: " + err.Error(), Err: err}
}

// bodyTimeoutError: the client did not send the whole request body
// within Options.BodyTimeout.
type bodyTimeoutError struct {
	timeout time.Duration
	err     error // the read's error (os.ErrDeadlineExceeded)
}

func (e *bodyTimeoutError) Error() string {
	return fmt.Sprintf("server: the request body did not arrive within %v", e.timeout)
}

func (e *bodyTimeoutError) Unwrap() error { return e.err }

func bodyTimeout(timeout time.Duration) *Error {
	return &Error{Status: http.StatusRequestTimeout, Type: TypeInvalidRequest, Code: CodeRequestTimeout,
		Message: fmt.Sprintf("the request body did not arrive within the server's body timeout of %v", timeout)}
}

func tooLarge(limit int64) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Type: TypeInvalidRequest, Code: CodeRequestTooLarge,
		Message: fmt.Sprintf("the request body is larger than %d bytes", limit)}
}

// paramName maps a sample.Params field to its request field.
func paramName(field string) string {
	switch field {
	case "Temperature":
		return "temperature"
	case "TopK":
		return "top_k"
	case "TopP":
		return "top_p"
	case "MinP":
		return "min_p"
	case "RepeatPenalty":
		return "repeat_penalty"
	case "RepeatLastN":
		return "repeat_last_n"
	case "FrequencyPenalty":
		return "frequency_penalty"
	case "PresencePenalty":
		return "presence_penalty"
	case "LogitBias":
		return "logit_bias"
	}
	return strings.ToLower(field)
}
