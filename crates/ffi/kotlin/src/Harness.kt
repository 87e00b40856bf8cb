// A minimal test runner for plain kotlinc + java (no JUnit, no Gradle):
// each test runs in runBlocking under a time bound; failures are printed
// with their cause and make the process exit with 1.

package rt.tether.test

import kotlinx.coroutines.TimeoutCancellationException
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlin.system.exitProcess

/** Bound on any single test: a hang fails, it never blocks CI. */
const val TEST_TIMEOUT_MS = 60_000L

class Suite {
    private val tests = mutableListOf<Pair<String, suspend () -> Unit>>()

    fun test(name: String, body: suspend () -> Unit) {
        tests += name to body
    }

    /** Runs the tests whose name contains `filter` (all when null); exits 1 on a failure. */
    fun run(filter: String?) {
        val selected = tests.filter { filter == null || it.first.contains(filter) }
        if (selected.isEmpty()) {
            System.err.println("no test matches '$filter'")
            exitProcess(2)
        }
        val failed = mutableListOf<String>()
        for ((name, body) in selected) {
            val started = System.nanoTime()
            val error = try {
                runBlocking { withTimeout(TEST_TIMEOUT_MS) { body() } }
                null
            } catch (e: TimeoutCancellationException) {
                AssertionError("did not finish within $TEST_TIMEOUT_MS ms", e)
            } catch (e: Throwable) {
                e
            }
            val ms = (System.nanoTime() - started) / 1_000_000
            if (error == null) {
                println("ok    $name ($ms ms)")
            } else {
                failed += name
                println("FAIL  $name ($ms ms)")
                println("      ${error::class.qualifiedName}: ${error.message}")
                error.stackTrace.filter { it.className.startsWith("rt.tether") }.take(6).forEach {
                    println("        at $it")
                }
                error.cause?.let { println("      caused by ${it::class.qualifiedName}: ${it.message}") }
            }
        }
        println()
        if (failed.isEmpty()) {
            println("kotlin: ${selected.size} tests passed")
        } else {
            println("kotlin: ${failed.size} of ${selected.size} tests FAILED: ${failed.joinToString(", ")}")
            exitProcess(1)
        }
    }
}

/**
 * Bounded polling, for what nothing notifies: `condition()` must come true
 * within `timeoutMs`, or the test fails saying `what` it waited for.
 */
suspend fun waitUntil(what: String, timeoutMs: Long = 5_000, condition: () -> Boolean) {
    val deadline = System.nanoTime() + timeoutMs * 1_000_000
    while (!condition()) {
        if (System.nanoTime() > deadline) throw AssertionError("waited $timeoutMs ms for $what, in vain")
        delay(10)
    }
}
