// Entry point of the Kotlin test program (crates/ffi/kotlin/test.sh):
// `java ... rt.tether.test.MainKt [name filter]`.

package rt.tether.test

fun main(args: Array<String>) {
    val suite = Suite()
    adapterCoreTests(suite)
    simulatedNodeTests(suite)
    liveNodeTests(suite)
    suite.run(args.firstOrNull())
}
